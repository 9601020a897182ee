"""`modelport verify`: thresholds per converted dtype, tokenization agreement, the report."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from ..api import load
from ..companions import find_companions
from ..dtypes import config_dtype, dtype_name
from ..errors import ModelVerificationError, UsageError
from .metrics import aggregate, compare
from .prompts import PROMPTS
from .transformers_runner import load_model, logits

# Provisional bounds for transformers-vs-transformers checks: a same-dtype float32 conversion is
# exact, so anything but rounding noise fails; half precision allows its rounding of weights.
THRESHOLDS = {
    "float32": {"min_cosine": 0.99999, "mean_kl": 1e-5},
    "float16": {"min_cosine": 0.999, "mean_kl": 1e-3},
    "bfloat16": {"min_cosine": 0.99, "mean_kl": 1e-2},
}


def _tokenizer(path: Path, base_model: Path | None):
    from transformers import AutoTokenizer

    files = find_companions(path, base_model).tokenizer_files
    if not files:
        return None
    folder = next(iter(files.values())).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(folder)


def _ids(tokenizer, text: str, vocab: int, limit: int = 512) -> list[int]:
    if tokenizer is None:
        return [(i * 7919 + len(text)) % vocab for i in range(min(len(text), limit))]
    return tokenizer(text)["input_ids"][:limit]


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True) -> dict:
    """Compare `converted` against `source` on the built-in prompts; raises on failure."""
    started = time.perf_counter()
    src, dst = Path(source).expanduser(), Path(converted).expanduser()
    base = Path(base_model).expanduser() if base_model else None
    for p in (src, dst):
        if not p.exists():
            raise UsageError("no such file or folder", p)
    converted_bundle = load(dst, base)
    dtype = config_dtype(converted_bundle.config) or max(converted_bundle.dtypes(), key=converted_bundle.dtypes().get)
    dtype_key = dtype_name(dtype) if not isinstance(dtype, str) else dtype
    limits = THRESHOLDS.get(dtype_key, THRESHOLDS["bfloat16"])
    ref_model, cand_model = load_model(src, base), load_model(dst, base)
    ref_tok, cand_tok = _tokenizer(src, base), _tokenizer(dst, base)
    vocab = int(converted_bundle.config.get("vocab_size", 256))
    texts = list(PROMPTS) + list(prompts or [])
    parts, same_tokens = [], 0
    for text in texts:
        ids = _ids(ref_tok, text, vocab)
        same_tokens += cand_tok is None or _ids(cand_tok, text, vocab) == ids
        parts.append(compare(logits(ref_model, ids), logits(cand_model, ids)))
    summary = aggregate(parts)
    failures = [f"{k} {summary[k]:.6g} {'<' if k == 'min_cosine' else '>'} {v:g}" for k, v in limits.items()
                if (summary[k] < v if k == "min_cosine" else summary[k] > v)]
    report = {
        "ok": not failures,
        "source": str(src),
        "converted": str(dst),
        "runtime": {"source": "transformers", "converted": "transformers"},
        "dtype": dtype_key,
        "thresholds": limits,
        "metrics": summary,
        "prompts": len(texts),
        "tokenization_agreement": same_tokens / len(texts),
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if write_sidecar:
        sidecar = dst.parent / f"{dst.name}.verify.json"
        sidecar.write_text(json.dumps(report, indent=2) + "\n")
        report["sidecar"] = str(sidecar)
    if failures:
        raise ModelVerificationError(f"verification failed: {'; '.join(failures)}", dst).with_report(report)
    return report
