"""Bring a training checkpoint's tensor names to the architecture's HF names, and check them.

Training wrappers put tokens into names: FSDP (`_fsdp_wrapped_module.`), activation checkpointing
(`_checkpoint_wrapped_module.`), torch.compile (`_orig_mod.`), DDP (`module.`), Lightning (`model.`
for `self.model`). Rather than a fixed list of leading prefixes, the prefix to strip (or the base
model prefix to add) is the one under which the most names match the architecture, so nested
wrappers and unusual attribute names work too. A name a family's templates spell otherwise
(`Tensors.spellings`: a released checkpoint's) is read as the template's name; one tensor under both
names is refused, since either could be meant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.bundle import TensorRef
from ..core.dtypes import is_floating
from ..core.errors import KeyMismatchError, cut
from .expected import ExpectedTensors

WRAPPER_TOKENS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# Buffers older checkpoints carry that transformers recomputes from the config: never weights, so never
# "unused" (rotary inverse frequencies, GPT-2's causal mask, BERT's position id range).
DERIVED_BUFFERS = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias", "embeddings.position_ids")
SHOWN = 5


@dataclass
class KeyReport:
    stripped_prefix: str = ""
    added_prefix: str = ""
    retied: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)      # source names nothing uses
    derived: list[str] = field(default_factory=list)         # recomputable buffers, dropped
    unloaded: list[str] = field(default_factory=list)        # what transformers does not load either, dropped
    fresh: list[str] = field(default_factory=list)           # optional tensors the source lacks
    origins: dict[str, str] = field(default_factory=dict)    # architecture name -> name in the source

    def notes(self) -> list[str]:
        out = []
        if self.stripped_prefix:
            out.append(f"stripped name prefix {self.stripped_prefix!r}")
        if self.added_prefix:
            out.append(f"added name prefix {self.added_prefix!r}")
        if self.retied:
            out.append(f"re-tied {', '.join(self.retied)}")
        if self.derived:
            out.append(f"dropped {summarize(self.derived)} buffer(s) transformers recomputes")
        if self.unloaded:
            out.append(f"dropped {summarize(self.unloaded)} tensor(s) transformers does not load either "
                       "(a multi-token-prediction head)")
        if self.unexpected:
            out.append(f"ignored {summarize(self.unexpected)} unexpected tensor(s)")
        if self.fresh:
            out.append(f"the source has no {summarize(self.fresh)} tensor(s); transformers initializes them afresh")
        return out


def summarize(names: list[str]) -> str:
    shown = ", ".join(cut(n) for n in names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} ({shown}{more})"


def strip_wrappers(name: str) -> str:
    for token in WRAPPER_TOKENS:
        name = name.replace(token, "")
    return name


def _candidate_prefixes(names: list[str]) -> set[str]:
    prefixes = {""}
    for name in names:
        parts = name.split(".")
        for depth in (1, 2, 3):
            if len(parts) > depth:
                prefixes.add(".".join(parts[:depth]) + ".")
    return prefixes


def _best_mapping(names: list[str], expected: ExpectedTensors) -> tuple[str, str, int]:
    known = expected.shapes.keys() | expected.other_names.keys()
    best = ("", "", sum(n in known for n in names))
    for prefix in sorted(_candidate_prefixes(names)):
        score = sum(n.startswith(prefix) and n[len(prefix):] in known for n in names)
        if score > best[2]:
            best = (prefix, "", score)
    if expected.base_model_prefix:
        added = expected.base_model_prefix + "."
        score = sum(added + n in known for n in names)
        if score > best[2]:
            best = ("", added, score)
    return best


def align(refs: dict[str, TensorRef], expected: ExpectedTensors, source: object) -> tuple[dict[str, TensorRef], KeyReport]:
    """Rename `refs` to the architecture's names; fail on missing keys or wrong shapes."""
    cleaned: dict[str, TensorRef] = {}
    original: dict[str, str] = {}
    for name, ref in refs.items():
        clean = strip_wrappers(name)
        if clean in cleaned:
            raise KeyMismatchError(f"two tensors map to the same name {clean!r}", source)
        cleaned[clean] = ref
        original[clean] = name
    strip, add, _ = _best_mapping(list(cleaned), expected)
    report = KeyReport(stripped_prefix=strip, added_prefix=add)

    out: dict[str, TensorRef] = {}
    for name, ref in cleaned.items():
        mapped = add + name[len(strip):] if name.startswith(strip) else name
        target = expected.name_for(mapped) if name.startswith(strip) else None
        if target in out:       # both spellings of one tensor: which one is meant is not clear
            raise KeyMismatchError(f"{original[name]!r} and {report.origins[target]!r} are both {target!r}", source)
        if target is not None:
            out[target] = ref.renamed(target)
            report.origins[target] = original[name]
        elif name.endswith(DERIVED_BUFFERS):
            report.derived.append(original[name])
        elif expected.not_loaded(mapped):
            report.unloaded.append(original[name])
        else:
            report.unexpected.append(original[name])

    for alias, target in expected.tied.items():
        if target not in out:
            continue
        if alias in out:   # present but tied by the config: marked so HF-style writers leave it out
            out[alias] = out[alias].renamed(alias, alias_of=target)
        else:
            out[alias] = out[target].renamed(alias, alias_of=target)
            report.retied.append(f"{alias} -> {target}")

    wrong = [f"{n} {out[n].shape} != {expected.shapes[n]}" for n in out
             if tuple(out[n].shape) != tuple(expected.shapes[n])]
    if wrong:
        raise KeyMismatchError(f"shape mismatch for {summarize(wrong)}", source)
    integral = [f"{report.origins.get(n, n)} ({out[n].dtype})" for n in out if not is_floating(out[n].dtype)]
    if integral:
        raise KeyMismatchError(f"weights must be floating point; {summarize(integral)} tensor(s) are not "
                               "(an integer-quantized checkpoint is not supported)", source)
    report.fresh = [n for n in expected.shapes if n not in out and expected.optional and n.endswith(expected.optional)]
    missing = [n for n in expected.shapes if n not in out and n not in report.fresh]
    if missing:
        hint = f"; unexpected: {summarize(report.unexpected)}" if report.unexpected else ""
        raise KeyMismatchError(f"missing {summarize(missing)} tensor(s){hint}", source)
    ordered = {n: out[n] for n in expected.shapes if n in out}
    return ordered, report
