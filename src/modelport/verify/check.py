"""`modelport verify`: the source and the result, each in its own runtime, fed the same token ids.

Each runs in the runtime its format names (formats table: GGUF in llama.cpp, ONNX in onnxruntime,
anything else in transformers; a source other than GGUF always in transformers), behind the one
Runtime interface, so checking is one loop whatever the formats. A re-quantized GGUF is checked
against its GGUF source, both in llama.cpp. Thresholds depend on the result's type.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..core.dtypes import config_dtype
from ..core.errors import ModelVerificationError, UsageError
from ..formats import ReadOptions, load, resolve_source
from ..runtimes import open_runtime
from .corpus import Chunk, Corpus, CorpusSettings
from .metrics import aggregate, compare
from .prompts import PROMPTS
from .quality import QualityStats
from .thresholds import default_limits, expected_error, failures, gguf_error, threshold_class

ID_LIMIT = 512
CACHE_BYTES = 256 << 20     # the source's scored logits are kept for further results up to this size


def _synthetic_ids(text: str, vocab: int) -> list[int]:
    """Ids for a source without a tokenizer: deterministic, spread over the vocabulary."""
    return [(i * 7919 + len(text)) % vocab for i in range(min(len(text), ID_LIMIT))]


class Reference:
    """The source side of a verification, run once however many results are checked against it:
    the model is loaded once and its logits (and greedy tokens) on each prompt computed once."""

    def __init__(self, source: str | Path, base_model: str | Path | None, prompts: list[str] | None,
                 corpus: CorpusSettings | None = None) -> None:
        self.path = Path(source).expanduser()
        self.base = Path(base_model).expanduser() if base_model else None
        if not self.path.exists():
            raise UsageError("no such file or folder", self.path)
        path, fmt = resolve_source(self.path)
        bundle = (lambda: load(path, ReadOptions(self.base)))
        self.context = max(ID_LIMIT * 2, corpus.ctx if corpus else 0)
        if fmt.runtime == "llama.cpp" and fmt.check is not None:
            fmt.check(path)
        # llama.cpp rounds a layer's input to its weights' dot-product type (f16, bf16, 8-bit for the
        # quants): a GGUF source carries that noise itself, about its own types' error
        self.error = gguf_error(path) if fmt.name == "gguf" else 0.0
        # a GGUF source runs in llama.cpp; any other in transformers (an ONNX file is never a source)
        self.runtime = open_runtime("llama.cpp" if fmt.runtime == "llama.cpp" else "transformers", path, bundle,
                                    self.context)
        self.vocab = self.runtime.vocab_size
        self.texts = list(PROMPTS) + list(prompts or [])
        self.has_tokenizer = self.runtime.tokenize(self.texts[0]) is not None
        self.ids = [(self.runtime.tokenize(t) or [])[:ID_LIMIT] if self.has_tokenizer else _synthetic_ids(t, self.vocab)
                    for t in self.texts]
        self.logits = [self.runtime.logits(ids) for ids in self.ids]
        self._greedy: dict[int, list[int]] = {}
        if corpus and self.logits[0].shape[-1] != self.vocab:
            raise UsageError(f"--corpus scores next-token predictions, and this model has no language-model head "
                             f"(it gives {self.logits[0].shape[-1]} values per position, not one per token)", self.path)
        self.corpus = Corpus(corpus, self.runtime, self.runtime.max_positions) if corpus else None
        self._scored: dict[int, np.ndarray] = {}

    def scored(self, chunk: Chunk) -> np.ndarray:
        """The source's logits at a chunk's scored positions; kept for the next result while they fit
        CACHE_BYTES, else computed again (a corpus-sized logit array is never held)."""
        if chunk.index in self._scored:
            return self._scored[chunk.index]
        logits = self.runtime.logits(chunk.ids)[chunk.first:-1]
        if (len(self._scored) + 1) * logits.nbytes <= CACHE_BYTES:
            self._scored[chunk.index] = logits
        return logits

    def greedy(self, n: int) -> list[int]:
        if n not in self._greedy:
            self._greedy[n] = self.runtime.greedy(self.ids[0], n)
        return self._greedy[n]


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True, thresholds: dict[str, float] | None = None,
           generate: int = 0, corpus: CorpusSettings | None = None) -> dict:
    """Compare `converted` against `source` on the built-in prompts (and `corpus`, when given); raises
    on failure."""
    return check(Reference(source, base_model, prompts, corpus), converted, write_sidecar=write_sidecar,
                 thresholds=thresholds, generate=generate)


def quality(reference: Reference, runtime) -> dict:
    """Perplexity and KL-divergence statistics of `runtime` against the source over the corpus, chunk
    by chunk: each chunk's logits are compared as they are produced, then dropped."""
    stats = QualityStats()
    for chunk in reference.corpus.chunks():
        stats.add(reference.scored(chunk), runtime.logits(chunk.ids)[chunk.first:-1], np.array(chunk.next_tokens()))
    return {**reference.corpus.describe(), **stats.summary(), **stats.profile(),
            "per_chunk": [vars(c) for c in stats.chunks]}


def check(reference: Reference, converted: str | Path, *, write_sidecar: bool = True,
          thresholds: dict[str, float] | None = None, generate: int = 0) -> dict:
    """Compare `converted` against an already-run reference; raises ModelVerificationError on failure."""
    started = time.perf_counter()
    dst = Path(converted).expanduser()
    path, fmt = resolve_source(dst)
    if fmt.check is not None:                     # headers and tables, before a runtime sees the file (llama.cpp
        fmt.check(path)                           # aborts the process on some damage it finds itself)
    bundle = (lambda: load(path, ReadOptions(reference.base)))
    dtype_key = threshold_class(fmt.name, path, lambda: _dtype_key(bundle()))
    own = expected_error(fmt.name, path, dtype_key)
    error = math.hypot(own, reference.error)
    noise = {"relative_error": error, "converted": own, "source": reference.error,
             "from": "tensor types" if fmt.name == "gguf" else "dtype"}
    limits = {**default_limits(dtype_key, error), **(thresholds or {})}
    runtime = open_runtime(fmt.runtime, path, bundle, reference.context)
    parts, agree = [], []
    for text, ids, expected in zip(reference.texts, reference.ids, reference.logits):
        theirs = runtime.tokenize(text) if reference.has_tokenizer else None
        if theirs is not None:
            agree.append(list(theirs)[:ID_LIMIT] == ids)
        parts.append(compare(expected, runtime.logits(ids)))
    # not measured (the converted runtime, or the source, carries no tokenizer) is None: "not compared"
    summary = {**aggregate(parts), "tokenization_agreement": sum(agree) / len(agree) if agree else None}
    stats = quality(reference, runtime) if reference.corpus else None
    failed = failures({**summary, **(stats or {})}, limits)
    generation = None
    if generate > 0:
        mine, theirs = reference.greedy(generate), list(runtime.greedy(reference.ids[0], generate))
        generation = {"prompt": reference.texts[0], "source": reference.runtime.decode(mine),
                      "converted": reference.runtime.decode(theirs), "source_ids": mine, "converted_ids": theirs,
                      "same": mine == theirs}
    error = ModelVerificationError(f"verification failed: {'; '.join(failed)}", dst) if failed else None
    sidecar = dst.parent / f"{dst.name}.verify.json"
    # one shape whatever the verdict (README: "JSON"): every key is present, None when not measured
    report = {
        "ok": not failed,
        "exit_code": error.exit_code if error else 0,
        "error": str(error) if error else None,
        "source": str(reference.path),
        "converted": str(dst),
        "runtime": {"source": reference.runtime.name, "converted": runtime.name},
        "dtype": dtype_key,
        "expected_noise": noise,
        "thresholds": limits,
        "failures": failed,
        "metrics": summary,
        "quality": stats,
        "prompts": len(reference.texts),
        "tokenization_agreement": summary["tokenization_agreement"],
        "per_prompt": [{"prompt": text, **part.figures} for text, part in zip(reference.texts, parts)],
        "generation": generation,
        "bytes": _size(dst),
        "seconds": round(time.perf_counter() - started, 3),
        "sidecar": str(sidecar) if write_sidecar else None,
        "report": None,
    }
    if write_sidecar:
        sidecar.write_text(json.dumps(report, indent=2) + "\n")
    if error is not None:
        raise error.with_report(report)
    return report


def _size(path: Path) -> int:
    """Bytes on disk of a file, or of a folder's files (a report's size axis)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _dtype_key(bundle) -> str:
    dtype = config_dtype(bundle.config)
    if dtype is not None:
        return dtype
    counts = bundle.dtypes()
    return max(counts, key=counts.get)

