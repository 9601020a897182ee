"""Extract llama.cpp's pre-tokenizer table from its own source into modelport's package data.

llama.cpp decides how a byte-level BPE vocabulary splits text by the name in `tokenizer.ggml.pre`:
`llama_vocab::impl::load` maps each name to a pre-tokenizer type and sets per-name flags
(ignore_merges, clean_spaces, add_bos, ...), and `llm_tokenizer_bpe`'s constructor gives each type its
list of regexes (and whether it byte-encodes). Both live in `src/llama-vocab.cpp`; `src/unicode.cpp`
replaces some regexes by code. This script reads the three facts from those files and writes them as
one JSON file, so the table modelport rebuilds tokenizers by is llama.cpp's own and a llama.cpp
upgrade cannot drift from it silently (tests/test_pretokenizer_table.py re-extracts and compares).

It is a script, not package code: it runs against the llama-cpp-python sdist `make install` unpacks
(`.venv/src/llama_cpp_python-*`), which an installed modelport does not have.

    python scripts/extract_pretokenizers.py [LLAMA_CPP_SRC] [--check]
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "src" / "modelport" / "data" / "llama_cpp_pretokenizers.json"
DOCS = ROOT / "docs" / "tokenizers.md"
BEGIN, END = "<!-- pre-tokenizer table: begin (scripts/extract_pretokenizers.py) -->", "<!-- pre-tokenizer table: end -->"
C_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
PREFIX = "LLAMA_VOCAB_PRE_TYPE_"


def c_unescape(literal: str) -> str:
    """A C string literal's body as the string it denotes (the escapes llama-vocab.cpp uses)."""
    out, i = [], 0
    while i < len(literal):
        if literal[i] == "\\":
            out.append(ESCAPES[literal[i + 1]])
            i += 2
        else:
            out.append(literal[i])
            i += 1
    return "".join(out)


def _block(text: str, start: int) -> str:
    """The text from `start` (just past an opening brace) to its matching closing brace."""
    depth, i = 1, start
    while depth:
        ch = text[i]
        if ch == '"':
            i = C_STRING.match(text, i).end()
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        i += 1
    return text[start:i - 1]


def _strip_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one line, a `//` inside a string literal left alone."""
    i = 0
    while i < len(line):
        if line[i] == '"':
            i = C_STRING.match(line, i).end()
            continue
        if line.startswith("//", i):
            return line[:i], line[i + 2:]
        i += 1
    return line, ""


def regex_types(vocab_cpp: str) -> dict[str, dict]:
    """Each pre-tokenizer type's regexes (in order), the tokenizer.json spelling llama.cpp notes beside
    an adapted one, and whether it byte-encodes, from `llm_tokenizer_bpe`'s constructor."""
    ctor = vocab_cpp.index("llm_tokenizer_bpe(const llama_vocab & vocab) {")
    switch = vocab_cpp.index("switch (vocab.get_pre_type()) {", ctor)
    body = _block(vocab_cpp, switch + len("switch (vocab.get_pre_type()) {"))
    types: dict[str, dict] = {}
    labels: list[str] = []
    current: dict | None = None
    original: str | None = None
    in_regexes = False
    for line in body.splitlines():
        code, comment = _strip_comment(line.strip())
        code = code.strip()
        if m := re.fullmatch(r"case (LLAMA_VOCAB_PRE_TYPE_\w+):", code):
            if current is not None:           # a new group of labels starts
                labels, current, original = [], None, None
            labels.append(m.group(1).removeprefix(PREFIX))
            continue
        if code == "default:":
            labels, current = ["DEFAULT"], None
            continue
        if code.startswith("regex_exprs = {"):
            current = {"regexes": [], "original": [], "byte_encode": True}
            for label in labels:
                types[label] = current
            in_regexes = True
            continue
        if comment and not C_STRING.search(code):     # a note: tokenizer.json's spelling of the next regex
            noted = C_STRING.search(comment)
            if noted is not None and ("original regex" in comment or original == ""):
                original = c_unescape(noted.group(1))
            elif "original regex from tokenizer.json" in comment:
                original = ""                 # the spelling follows on the next comment line
        if in_regexes:
            if code.startswith("};"):
                in_regexes = False
            elif (literal := C_STRING.search(code)) is not None:
                current["regexes"].append(c_unescape(literal.group(1)))
                current["original"].append(original or None)
                original = None
            continue
        if current is not None and (m := re.fullmatch(r"byte_encode = (true|false);", code)):
            current["byte_encode"] = m.group(1) == "true"
    types = {label: dict(entry) for label, entry in types.items()}     # one entry per type, not shared
    for entry in types.values():
        if not any(entry["original"]):
            del entry["original"]
    return types


def names(vocab_cpp: str) -> tuple[dict[str, bool], dict[str, dict]]:
    """(the flags every BPE vocabulary starts with, tokenizer.ggml.pre name -> {type, flags it sets}),
    from the chain of `tokenizer_pre == "..."` tests in `llama_vocab::impl::load`."""
    start = vocab_cpp.index("if (type == LLAMA_VOCAB_TYPE_BPE) {")
    end = vocab_cpp.index("} else if (type == LLAMA_VOCAB_TYPE_SPM) {", start)
    chain = vocab_cpp[start:end]
    preamble = chain[:chain.index("if (tokenizer_pre.empty())")]
    defaults = {k: v == "true" for k, v in re.findall(r"(\w+) = (true|false);", preamble)}
    found: dict[str, dict] = {}
    branches = re.split(r"\}\s*else\s+if\s*\(", chain)
    for branch in branches[1:]:
        condition, _, statements = branch.partition(") {")
        spelled = re.findall(r'tokenizer_pre\s*==\s*"([^"]+)"', condition)
        if not spelled:
            continue
        flags: dict[str, object] = {}
        pre_type = None
        for key, value in re.findall(r"([\w.]+)\s*=\s*(\w+);", statements.split("} else")[0]):
            if key == "pre_type":
                pre_type = value.removeprefix(PREFIX)
            else:
                flags[key] = {"true": True, "false": False}.get(value, value)
        for name in spelled:
            found[name] = {"type": pre_type, "flags": flags}
    return defaults, dict(sorted(found.items()))


def custom_handlers(unicode_cpp: str) -> dict[str, str]:
    """regex -> the unicode.cpp function that splits by it instead of std::regex."""
    start = unicode_cpp.index("static std::vector<size_t> unicode_regex_split_custom(")
    body = _block(unicode_cpp, unicode_cpp.index("{", start) + 1)
    handlers: dict[str, str] = {}
    pending: list[str] = []
    for line in body.splitlines():
        pending += [c_unescape(s) for s in re.findall(r'regex_expr == "((?:[^"\\]|\\.)*)"', line)]
        if m := re.search(r"bpe_offsets = (unicode_regex_split_custom_\w+)\(", line):
            for regex in pending:
                handlers[regex] = m.group(1).removeprefix("unicode_regex_split_custom_")
            pending = []
    return handlers


def extract(src: Path) -> dict:
    """The table from llama.cpp's source folder `src` (the sdist's vendor/llama.cpp)."""
    vocab_cpp = (src / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")
    unicode_cpp = (src / "src" / "unicode.cpp").read_text(encoding="utf-8")
    types = regex_types(vocab_cpp)
    handlers = custom_handlers(unicode_cpp)
    for entry in types.values():
        custom = [handlers.get(r) for r in entry["regexes"]]
        if any(custom):
            entry["custom"] = custom
    for kind, flag in re.findall(r"if \(pre_type == LLAMA_VOCAB_PRE_TYPE_(\w+) && !(\w+)\) \{\s*\2 = true;", vocab_cpp):
        types[kind].setdefault("forced", {})[flag] = True      # set whatever the file says (Gemma 4's add_bos)
    defaults, by_name = names(vocab_cpp)
    version = re.search(r"llama_cpp_python-([\w.]+)", str(src.resolve()))
    return {"generated_by": "scripts/extract_pretokenizers.py from llama.cpp's src/llama-vocab.cpp and "
                            "src/unicode.cpp; do not edit",
            "llama_cpp_python": version.group(1) if version else None,
            "bpe_defaults": defaults, "names": by_name, "types": dict(sorted(types.items()))}


def rendered(table: dict) -> str:
    return json.dumps(table, indent=1, ensure_ascii=False) + "\n"


def docs_table() -> str:
    """docs/tokenizers.md's table of types, from the committed data file as the package reads it."""
    sys.path.insert(0, str(ROOT / "src"))
    from modelport.formats.gguf import pretokenizer
    by_type: dict[str, list] = {}
    for name in pretokenizer.names():
        rules = pretokenizer.rules(name)
        by_type.setdefault(rules.type, []).append(rules)
    lines = ["| llama.cpp type | `tokenizer.ggml.pre` names | regexes | flags the names set | rebuilt as HF |",
             "|---|---|---|---|---|"]
    for kind, found in sorted(by_type.items()):
        entry = pretokenizer.table()["types"][kind]
        groups: dict[str, list[str]] = {}
        for n in found:
            groups.setdefault(", ".join(f"{k}={v}" for k, v in sorted(n.flags.items())) or "-", []).append(n.name)
        flags = [spelled if len(groups) == 1 else f"{', '.join(members)}: {spelled}"
                 for spelled, members in sorted(groups.items())]
        flags += [f"{flag}=True whatever the file says" for flag in entry.get("forced", {})]
        spelled = sum(1 for o in entry.get("original") or [] if o)
        regexes = f"{len(entry['regexes'])}" + (f" ({spelled} as tokenizer.json spells)" if spelled else "")
        code = [c for c in entry.get("custom") or [] if c]
        if code:
            regexes += f"; unicode.cpp: {', '.join(code)}"
        if not entry["byte_encode"]:
            regexes += "; raw UTF-8 (no byte-level encoding)"
        rebuilt = "no: " + found[0].refusal if found[0].refusal else "yes"
        lines.append(f"| {kind} | {', '.join(n.name for n in found)} | {regexes} | {'; '.join(flags)} | "
                     f"{rebuilt} |")
    return "\n".join(lines) + "\n"


def with_docs_table(text: str, table: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table + text[end:]


def default_source() -> Path:
    found = sorted(glob.glob(str(ROOT / ".venv" / "src" / "llama_cpp_python-*" / "vendor" / "llama.cpp")))
    if not found:
        sys.exit("llama.cpp's source is missing: run `make install` (it unpacks the llama-cpp-python sdist)")
    return Path(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, help="llama.cpp source folder (default: the sdist in .venv)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = parser.parse_args()
    text = rendered(extract(args.source or default_source()))
    if args.check:
        sys.exit(0 if OUTPUT.read_text(encoding="utf-8") == text else f"{OUTPUT} differs from the source")
    OUTPUT.write_text(text, encoding="utf-8")
    table = json.loads(text)
    print(f"{OUTPUT}: {len(table['names'])} names, {len(table['types'])} types")
    DOCS.write_text(with_docs_table(DOCS.read_text(encoding="utf-8"), docs_table()), encoding="utf-8")
    print(f"{DOCS}: table of types rewritten")


if __name__ == "__main__":
    main()
