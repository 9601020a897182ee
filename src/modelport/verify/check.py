"""`modelport verify`: thresholds per converted dtype, tokenization agreement, the report."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from ..api import load
from ..companions import find_companions
from ..detect import GGUF, ONNX, detect

from ..dtypes import config_dtype, dtype_name
from ..errors import ModelVerificationError, UsageError
from .metrics import aggregate, compare
from .prompts import PROMPTS
from .thresholds import THRESHOLDS, failures, gguf_class
from .transformers_runner import load_model, logits, transformers_greedy


RUNTIMES = {GGUF: "llama.cpp", ONNX: "onnxruntime"}


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


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True, thresholds: dict[str, float] | None = None,
           generate: int = 0) -> dict:
    """Compare `converted` against `source` on the built-in prompts; raises on failure."""
    started = time.perf_counter()
    src, dst = Path(source).expanduser(), Path(converted).expanduser()
    base = Path(base_model).expanduser() if base_model else None
    for p in (src, dst):
        if not p.exists():
            raise UsageError("no such file or folder", p)
    kind = detect(dst)
    is_gguf = kind == GGUF
    if kind == ONNX:
        from .onnxruntime_runner import onnx_class
        dtype_key = onnx_class(dst)
    else:
        dtype_key = gguf_class(dst) if is_gguf else _dtype_key(load(dst, base))
    limits = {**THRESHOLDS.get(dtype_key, THRESHOLDS["bfloat16"]), **(thresholds or {})}
    ref_model, ref_tok = load_model(src, base), _tokenizer(src, base)
    vocab = int(getattr(ref_model.config, "vocab_size", 256))
    texts = list(PROMPTS) + list(prompts or [])
    if is_gguf:
        from .llama_cpp_runner import LlamaCppModel
        runtime = LlamaCppModel(dst, n_ctx=1024)
        run, tokenize, greedy = runtime.logits, (lambda text: runtime.tokenize(text)), runtime.greedy
    elif kind == ONNX:
        from .onnxruntime_runner import OnnxModel
        onnx_model = OnnxModel(dst)
        run, tokenize, greedy = onnx_model.logits, None, onnx_model.greedy
    else:
        cand_model, cand_tok = load_model(dst, base), _tokenizer(dst, base)
        run = lambda ids: logits(cand_model, ids)  # noqa: E731
        tokenize = (lambda text: _ids(cand_tok, text, vocab)) if cand_tok is not None else None
        greedy = lambda ids, n: transformers_greedy(cand_model, ids, n)  # noqa: E731
    parts, same_tokens = [], 0
    for text in texts:
        ids = _ids(ref_tok, text, vocab)
        same_tokens += tokenize is None or ref_tok is None or list(tokenize(text)) == ids
        parts.append(compare(logits(ref_model, ids), torch.as_tensor(run(ids))))
    summary = {**aggregate(parts), "tokenization_agreement": same_tokens / len(texts)}
    failed = failures(summary, limits)
    report = {
        "ok": not failed,
        "source": str(src),
        "converted": str(dst),
        "runtime": {"source": "transformers", "converted": RUNTIMES.get(kind, "transformers")},
        "dtype": dtype_key,
        "thresholds": limits,
        "metrics": summary,
        "prompts": len(texts),
        "tokenization_agreement": summary["tokenization_agreement"],
        "failures": failed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if generate > 0:
        ids = _ids(ref_tok, texts[0], vocab)
        mine, theirs = transformers_greedy(ref_model, ids, generate), list(greedy(ids, generate))
        decode = (lambda t: ref_tok.decode(t)) if ref_tok is not None else str
        report["generation"] = {"prompt": texts[0], "source": decode(mine), "converted": decode(theirs),
                                "source_ids": mine, "converted_ids": theirs, "same": mine == theirs}
    if write_sidecar:
        sidecar = dst.parent / f"{dst.name}.verify.json"
        sidecar.write_text(json.dumps(report, indent=2) + "\n")
        report["sidecar"] = str(sidecar)
    if failed:
        raise ModelVerificationError(f"verification failed: {'; '.join(failed)}", dst).with_report(report)
    return report
