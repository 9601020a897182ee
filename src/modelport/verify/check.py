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


class Reference:
    """The source side of a verification, run once however many results are checked against it:
    the model is loaded once and its logits (and greedy tokens) on each prompt computed once."""

    def __init__(self, source: str | Path, base_model: str | Path | None, prompts: list[str] | None) -> None:
        self.path = Path(source).expanduser()
        self.base = Path(base_model).expanduser() if base_model else None
        if not self.path.exists():
            raise UsageError("no such file or folder", self.path)
        self.model, self.tokenizer = load_model(self.path, self.base), _tokenizer(self.path, self.base)
        self.vocab = int(getattr(self.model.config, "vocab_size", 256))
        self.texts = list(PROMPTS) + list(prompts or [])
        self.ids = [_ids(self.tokenizer, text, self.vocab) for text in self.texts]
        self.logits = [logits(self.model, ids) for ids in self.ids]
        self._greedy: dict[int, list[int]] = {}

    def greedy(self, n: int) -> list[int]:
        if n not in self._greedy:
            self._greedy[n] = transformers_greedy(self.model, self.ids[0], n)
        return self._greedy[n]


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True, thresholds: dict[str, float] | None = None,
           generate: int = 0) -> dict:
    """Compare `converted` against `source` on the built-in prompts; raises on failure."""
    return check(Reference(source, base_model, prompts), converted, write_sidecar=write_sidecar,
                 thresholds=thresholds, generate=generate)


def check(reference: Reference, converted: str | Path, *, write_sidecar: bool = True,
          thresholds: dict[str, float] | None = None, generate: int = 0) -> dict:
    """Compare `converted` against an already-run reference; raises ModelVerificationError on failure."""
    started = time.perf_counter()
    dst, base = Path(converted).expanduser(), reference.base
    if not dst.exists():
        raise UsageError("no such file or folder", dst)
    kind = detect(dst)
    if kind == ONNX:
        from .onnxruntime_runner import onnx_class
        dtype_key = onnx_class(dst)
    elif kind == GGUF:
        # every header and table is checked before llama.cpp sees the file: it aborts the process on some
        # damage it finds itself
        from ..formats.gguf.reader import checked_header
        checked_header(dst)
        dtype_key = gguf_class(dst)
    else:
        dtype_key = _dtype_key(load(dst, base))
    limits = {**THRESHOLDS.get(dtype_key, THRESHOLDS["bfloat16"]), **(thresholds or {})}
    if kind == GGUF:
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
        tokenize = (lambda text: _ids(cand_tok, text, reference.vocab)) if cand_tok is not None else None
        greedy = lambda ids, n: transformers_greedy(cand_model, ids, n)  # noqa: E731
    parts, same_tokens = [], 0
    for text, ids, expected in zip(reference.texts, reference.ids, reference.logits):
        same_tokens += tokenize is None or reference.tokenizer is None or list(tokenize(text)) == ids
        parts.append(compare(expected, torch.as_tensor(run(ids))))
    summary = {**aggregate(parts), "tokenization_agreement": same_tokens / len(reference.texts)}
    failed = failures(summary, limits)
    report = {
        "ok": not failed,
        "source": str(reference.path),
        "converted": str(dst),
        "runtime": {"source": "transformers", "converted": RUNTIMES.get(kind, "transformers")},
        "dtype": dtype_key,
        "thresholds": limits,
        "metrics": summary,
        "prompts": len(reference.texts),
        "tokenization_agreement": summary["tokenization_agreement"],
        "failures": failed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if generate > 0:
        mine, theirs = reference.greedy(generate), list(greedy(reference.ids[0], generate))
        tok = reference.tokenizer
        decode = (lambda t: tok.decode(t)) if tok is not None else str
        report["generation"] = {"prompt": reference.texts[0], "source": decode(mine), "converted": decode(theirs),
                                "source_ids": mine, "converted_ids": theirs, "same": mine == theirs}
    if write_sidecar:
        sidecar = dst.parent / f"{dst.name}.verify.json"
        sidecar.write_text(json.dumps(report, indent=2) + "\n")
        report["sidecar"] = str(sidecar)
    if failed:
        raise ModelVerificationError(f"verification failed: {'; '.join(failed)}", dst).with_report(report)
    return report
