"""`modelport verify`: thresholds per converted dtype, tokenization agreement, the report."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from ..api import load
from ..companions import find_companions
from ..detect import GGUF, detect
from ..dtypes import config_dtype, dtype_name
from ..errors import ModelVerificationError, UsageError
from .metrics import aggregate, compare
from .prompts import PROMPTS
from .transformers_runner import load_model, logits

# Provisional bounds (issue 4 replaces them with ones measured on trained weights): a same-dtype
# float32 conversion is exact up to kernel rounding; half precision allows its rounding of weights;
# quantized GGUF files allow what their bit width costs.
THRESHOLDS = {
    "float32": {"min_cosine": 0.99999, "mean_kl": 1e-5},
    "float16": {"min_cosine": 0.999, "mean_kl": 1e-3},
    "bfloat16": {"min_cosine": 0.99, "mean_kl": 1e-2},
    "q8_0": {"min_cosine": 0.99, "mean_kl": 1e-2},
    "4-6 bit": {"min_cosine": 0.9, "mean_kl": 0.1},
    "2-3 bit": {"min_cosine": 0.8, "mean_kl": 0.5},
}
GGUF_CLASSES = {"ALL_F32": "float32", "MOSTLY_F16": "float16", "MOSTLY_BF16": "bfloat16", "MOSTLY_Q8_0": "q8_0",
                "MOSTLY_Q2_K": "2-3 bit", "MOSTLY_Q3_K_S": "2-3 bit", "MOSTLY_Q3_K_M": "2-3 bit",
                "MOSTLY_Q3_K_L": "2-3 bit"}


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


def _dtype_key(bundle) -> str:
    dtype = config_dtype(bundle.config)
    if dtype is not None:
        return dtype_name(dtype)
    counts = bundle.dtypes()
    return max(counts, key=counts.get)


def _gguf_class(path: Path) -> str:
    import gguf
    from gguf import LlamaFileType
    field = gguf.GGUFReader(path).fields.get("general.file_type")
    name = LlamaFileType(int(field.contents())).name if field is not None else "ALL_F32"
    return GGUF_CLASSES.get(name, "4-6 bit")


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True) -> dict:
    """Compare `converted` against `source` on the built-in prompts; raises on failure."""
    started = time.perf_counter()
    src, dst = Path(source).expanduser(), Path(converted).expanduser()
    base = Path(base_model).expanduser() if base_model else None
    for p in (src, dst):
        if not p.exists():
            raise UsageError("no such file or folder", p)
    is_gguf = detect(dst) == GGUF
    dtype_key = _gguf_class(dst) if is_gguf else _dtype_key(load(dst, base))
    limits = THRESHOLDS.get(dtype_key, THRESHOLDS["bfloat16"])
    ref_model, ref_tok = load_model(src, base), _tokenizer(src, base)
    vocab = int(getattr(ref_model.config, "vocab_size", 256))
    texts = list(PROMPTS) + list(prompts or [])
    if is_gguf:
        from .llama_cpp_runner import LlamaCppModel
        runtime = LlamaCppModel(dst, n_ctx=1024)
        run, tokenize = runtime.logits, (lambda text: runtime.tokenize(text))
    else:
        cand_model, cand_tok = load_model(dst, base), _tokenizer(dst, base)
        run = lambda ids: logits(cand_model, ids)  # noqa: E731
        tokenize = (lambda text: _ids(cand_tok, text, vocab)) if cand_tok is not None else None
    parts, same_tokens = [], 0
    for text in texts:
        ids = _ids(ref_tok, text, vocab)
        same_tokens += tokenize is None or ref_tok is None or list(tokenize(text)) == ids
        parts.append(compare(logits(ref_model, ids), torch.as_tensor(run(ids))))
    summary = aggregate(parts)
    failures = [f"{k} {summary[k]:.6g} {'<' if k == 'min_cosine' else '>'} {v:g}" for k, v in limits.items()
                if (summary[k] < v if k == "min_cosine" else summary[k] > v)]
    report = {
        "ok": not failures,
        "source": str(src),
        "converted": str(dst),
        "runtime": {"source": "transformers", "converted": "llama.cpp" if is_gguf else "transformers"},
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
