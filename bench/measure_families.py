"""The family table of docs/architectures.md, measured: every registered family's tiny model (its spec's
`tiny` config, random weights, a tokenizer trained here) converted to an f32 GGUF and run in llama.cpp
(f32 KV cache) against transformers on the verify prompts, then read back to HF and run again.

Run: `.venv/bin/python bench/measure_families.py --write` (about 2 minutes) rewrites the table
between the markers in docs/architectures.md; without --write it prints it. `--only FAMILY ...`
measures those families and keeps the table's other rows as they are.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"
START, END = "<!-- families:start -->", "<!-- families:end -->"


def measure(spec, workdir: Path) -> tuple[float | None, float | None]:
    """(max |Δ| of llama.cpp's logits against transformers', max |Δ| of the GGUF read back to HF), over
    every position of the verify prompts; None where the family has no GGUF."""
    import modelport
    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    from modelport.samples import save_model
    from modelport.verify.prompts import PROMPTS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, out, back = workdir / spec.model_type, workdir / f"{spec.model_type}.gguf", workdir / f"{spec.model_type}-hf"
    save_model(src, spec.model_type)
    if spec.gguf is None or not spec.hf_class.endswith("CausalLM"):
        return None, None
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    tok = AutoTokenizer.from_pretrained(src)
    modelport.convert(src, out, quant="f32")
    modelport.convert(out, back, base_model=src)
    returned = AutoModelForCausalLM.from_pretrained(back).eval()
    runtime = LlamaCppRuntime(out)
    cpp, hf = 0.0, 0.0
    for text in PROMPTS[:4]:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
            again = returned(torch.tensor([ids])).logits[0].numpy()
        cpp = max(cpp, float(np.abs(runtime.logits(ids) - ref).max()))
        hf = max(hf, float(np.abs(again - ref).max()))
    return cpp, hf


def documented_rows() -> dict[str, str]:
    """The table's rows as docs/architectures.md has them now, by family."""
    table = DOC.read_text().split(START)[1].split(END)[0]
    return {line.split("|")[1].strip(): line for line in table.strip().splitlines()[2:]}


def table(rows: list[tuple], kept: dict[str, str] | None = None) -> str:
    lines = ["| family (`model_type`) | transformers class | GGUF arch | llama.cpp max abs Δ | GGUF → HF max abs Δ "
             "| ONNX | notes |", "|---|---|---|---|---|---|---|"]
    fmt = (lambda v: "—" if v is None else f"{v:.1e}")
    made = {model_type: f"| {model_type} | {cls} | {arch or '—'} | {fmt(cpp)} | {fmt(hf)} | {onnx or '—'} | {note} |"
            for model_type, cls, arch, cpp, hf, onnx, note in rows}
    merged = {**(kept or {}), **made}
    return "\n".join(lines + [merged[name] for name in sorted(merged)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC}")
    parser.add_argument("--only", nargs="+", metavar="FAMILY", help="measure these; keep the other rows")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import gguf

    from modelport.architectures import registered
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in registered():
            if args.only and spec.model_type not in args.only:
                continue
            cpp, hf = measure(spec, Path(tmp)) if spec.tiny else (None, None)
            arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[spec.gguf.arch]] if spec.gguf else None
            cls = spec.tensors.classes[0] if spec.tensors is not None and spec.tensors.classes else spec.hf_class
            rows.append((spec.model_type, cls, arch, cpp, hf, spec.onnx, spec.note))
            print(f"{spec.model_type:20} {arch or '-':12} {cpp if cpp is not None else '-'} "
                  f"{hf if hf is not None else '-'}", file=sys.stderr)
    kept = {name: row for name, row in documented_rows().items()
            if name in {s.model_type for s in registered()}} if args.only else None
    text = table(rows, kept)
    if not args.write:
        print(text)
        return
    doc = DOC.read_text()
    DOC.write_text(re.sub(f"{re.escape(START)}.*{re.escape(END)}", f"{START}\n{text}\n{END}", doc, flags=re.S))
    print(f"wrote {len(rows)} families into {DOC}")


if __name__ == "__main__":
    main()
