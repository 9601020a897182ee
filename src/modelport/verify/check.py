"""`modelport verify`: the source and the result, each in its own runtime, fed the same token ids.

Each runs in the runtime its format names (formats table: GGUF in llama.cpp, ONNX in onnxruntime,
anything else in transformers; a source other than GGUF always in transformers), behind the one
Runtime interface, so checking is one loop whatever the formats. A re-quantized GGUF is checked
against its GGUF source, both in llama.cpp. Thresholds depend on the result's type.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np

from ..architectures.expressions import config_gaps
from ..core.dtypes import config_dtype
from ..core.errors import ModelVerificationError, UsageError
from ..formats import ReadOptions, load, resolve_source
from ..runtimes import open_runtime
from ..runtimes.rows import LogitRows
from ..storage import mounted
from .corpus import Chunk, Corpus, CorpusSettings
from .memory import MAPPED, Choice, default_max_memory, peak_rss, transformers_runtime
from .metrics import aggregate, compare
from .prompts import PROMPTS
from .quality import QualityStats
from .thresholds import TYPE_ERROR, default_limits, expected_error, failures, gguf_error, threshold_class

ID_LIMIT = 512
CACHE_BYTES = 256 << 20     # the source's logits are kept for further results up to this size


def _synthetic_ids(text: str, vocab: int) -> list[int]:
    """Ids for a source without a tokenizer: deterministic, spread over the vocabulary."""
    return [(i * 7919 + len(text)) % vocab for i in range(min(len(text), ID_LIMIT))]


class Logits:
    """A runtime's logits for a fixed list of sequences, one sequence at a time. A layer-major runtime
    runs every sequence through its weights here, before anything asks (`hidden_many`), so each weight
    is read once per verify however many sequences there are; any other computes each when asked.
    Runtimes that can make them a block of positions at a time (llama.cpp, layer-major) return
    `LogitRows`, which the comparisons walk in order: a vocab x positions array is then never held."""

    def __init__(self, runtime, sequences: list[list[int]]) -> None:
        self.runtime, self.sequences = runtime, sequences
        self.hidden = runtime.hidden_many(sequences) if hasattr(runtime, "hidden_many") else None

    def __call__(self, k: int, first: int = 0, stop: int | None = None) -> np.ndarray | LogitRows:
        """Sequence k's logits at positions [first, stop) (a scored chunk's: its second half but the last)."""
        ids = self.sequences[k]
        if self.hidden is not None:
            return self.runtime.rows_from(ids, self.hidden[k], first, stop)
        if hasattr(self.runtime, "logit_rows"):
            return self.runtime.logit_rows(ids, first, stop)
        return self.runtime.logits(ids)[first:stop]


class Reference:
    """The source side of a verification, run once however many results are checked against it: the
    model is opened once (whole, or layer-major when the whole would not fit `max_memory`), and its
    logits on each prompt and chunk kept for the next result while they fit CACHE_BYTES."""

    def __init__(self, source: str | Path, base_model: str | Path | None, prompts: list[str] | None,
                 corpus: CorpusSettings | None = None, max_memory: int | None = None) -> None:
        with config_gaps(source):
            self._open(source, base_model, prompts, corpus, max_memory)

    def _open(self, source: str | Path, base_model: str | Path | None, prompts: list[str] | None,
              corpus: CorpusSettings | None, max_memory: int | None) -> None:
        self.path = Path(source).expanduser()
        self.base = Path(base_model).expanduser() if base_model else None
        if not self.path.exists():
            raise UsageError("no such file or folder", self.path)
        path, fmt = resolve_source(self.path)
        self.max_memory = max_memory or default_max_memory()
        if fmt.runtime == "llama.cpp" and fmt.check is not None:
            fmt.check(path)
        # llama.cpp rounds a layer's input to its weights' dot-product type (f16, bf16, 8-bit for the
        # quants): a GGUF source carries that noise itself, about its own types' error
        self.error = gguf_error(path) if fmt.name == "gguf" else 0.0
        # a GGUF source runs in llama.cpp; any other in transformers (an ONNX file is never a source)
        if fmt.runtime == "llama.cpp":
            self.runtime = open_runtime("llama.cpp", path, lambda: None, max(ID_LIMIT * 2, corpus.ctx if corpus else 0))
            choice = Choice(self.runtime, MAPPED, "a GGUF source runs in llama.cpp, which maps its file")
        else:
            choice = transformers_runtime(load(path, ReadOptions(self.base)), self.max_memory, max_memory is not None)
            self.runtime = choice.runtime
        self.choice = choice
        self.vocab = self.runtime.vocab_size
        self.texts = list(PROMPTS) + list(prompts or [])
        self.has_tokenizer = self.runtime.tokenize(self.texts[0]) is not None
        self.ids = [(self.runtime.tokenize(t) or [])[:ID_LIMIT] if self.has_tokenizer else _synthetic_ids(t, self.vocab)
                    for t in self.texts]
        self._greedy: dict[int, list[int]] = {}
        self.corpus = Corpus(corpus, self.runtime, self.runtime.max_positions) if corpus else None
        self.chunks: list[Chunk] = list(self.corpus.chunks()) if self.corpus else []
        self.sequences = self.ids + [chunk.ids for chunk in self.chunks]
        # the converted runtime is sized for the longest sequence (a runtime's logit buffers grow with it)
        self.context = max(len(ids) for ids in self.sequences)
        self._logits = Logits(self.runtime, self.sequences)
        self._kept: dict[int, np.ndarray] = {}
        if corpus and self.source(0).shape[-1] != self.vocab:
            raise UsageError(f"--corpus scores next-token predictions, and this model has no language-model head "
                             f"(it gives {self.source(0).shape[-1]} values per position, not one per token)", self.path)

    def source(self, k: int) -> np.ndarray:
        """The source's logits for sequence k: a prompt's at every position, a chunk's at its scored
        positions only; kept for the next result while they fit CACHE_BYTES, else computed again (a
        corpus-sized logit array is never held). Layer-major, only the head runs again."""
        if k in self._kept:
            return self._kept[k]
        logits = self._logits(k) if k < len(self.ids) else self.scored(self._logits, k)
        # layer-major keeps every sequence's last hidden state, from which the head alone remakes its logits
        if self._logits.hidden is None and sum(a.nbytes for a in self._kept.values()) + logits.nbytes <= CACHE_BYTES:
            self._kept[k] = logits.materialize() if isinstance(logits, LogitRows) else logits
        return logits

    def scored(self, logits: Logits, k: int) -> np.ndarray | LogitRows:
        """Chunk k's logits at its scored positions (the last predicts nothing in the chunk)."""
        chunk = self.chunks[k - len(self.ids)]
        return logits(k, chunk.first, len(chunk.ids) - 1)

    def greedy(self, n: int) -> list[int]:
        if n not in self._greedy:
            self._greedy[n] = self.runtime.greedy(self.ids[0], n)
        return self._greedy[n]


def verify(source: str | Path, converted: str | Path, *, base_model: str | Path | None = None,
           prompts: list[str] | None = None, write_sidecar: bool = True, thresholds: dict[str, float] | None = None,
           generate: int = 0, corpus: CorpusSettings | None = None, max_memory: int | None = None) -> dict:
    """Compare `converted` against `source` on the built-in prompts (and `corpus`, when given); raises
    on failure."""
    with mounted(base_model) if base_model else contextlib.nullcontext() as base:
        return check(Reference(source, base, prompts, corpus, max_memory), converted, write_sidecar=write_sidecar,
                     thresholds=thresholds, generate=generate)


def quality(reference: Reference, logits: Logits) -> dict:
    """Perplexity and KL-divergence statistics of the converted model against the source over the corpus,
    chunk by chunk: each chunk's logits are compared as they are produced, then dropped."""
    stats = QualityStats()
    for j, chunk in enumerate(reference.chunks):
        k = len(reference.ids) + j
        stats.add(reference.source(k), reference.scored(logits, k), np.array(chunk.next_tokens()))
    return {**reference.corpus.describe(), **stats.summary(), **stats.profile(),
            "per_chunk": [vars(c) for c in stats.chunks]}


def _converted_runtime(reference: Reference, fmt, path: Path, bundle, generate: int) -> Choice:
    """The result's runtime: llama.cpp and onnxruntime as its format names them; transformers whole or
    layer-major within what the reference leaves of the budget."""
    if fmt.runtime != "transformers":
        context = max(reference.context, len(reference.ids[0]) + generate)
        return Choice(open_runtime(fmt.runtime, path, bundle, context), MAPPED,
                      f"{fmt.runtime} maps or loads its file itself")
    left = reference.max_memory - reference.choice.holds
    return transformers_runtime(bundle(), max(left, 1), False)


def check(reference: Reference, converted: str | Path, *, write_sidecar: bool = True,
          thresholds: dict[str, float] | None = None, generate: int = 0) -> dict:
    """Compare `converted` against an already-run reference; raises ModelVerificationError on failure."""
    with config_gaps(converted):
        return _check(reference, converted, write_sidecar, thresholds, generate)


def _runtime_gap(reference: Reference, fmt: str, path: Path) -> float:
    """The relative error llama.cpp's own way of computing an arch adds against transformers
    (GGUFMapping.runtime_type: Gemma 3n's F16 GELU table), 0 for every other arch and pairing. A property
    of llama.cpp's graph, so it is looked up by the file's arch, not by a config the file need not have."""
    if fmt != "gguf" or reference.runtime.name == "llama.cpp":
        return 0.0
    from ..architectures import registered
    from ..formats.gguf.config_rebuild import arch_name
    from ..formats.gguf.header import read_header

    arch = read_header(path).architecture
    return max((TYPE_ERROR[s.gguf.runtime_type] for family in registered() for s in family.with_variants()
                if s.gguf is not None and s.gguf.runtime_type and arch_name(s) == arch), default=0.0)


def _check(reference: Reference, converted: str | Path, write_sidecar: bool, thresholds: dict[str, float] | None,
           generate: int) -> dict:
    started = time.perf_counter()
    dst = Path(converted).expanduser()
    path, fmt = resolve_source(dst)
    if fmt.check is not None:                     # headers and tables, before a runtime sees the file (llama.cpp
        fmt.check(path)                           # aborts the process on some damage it finds itself)
    bundle = (lambda: load(path, ReadOptions(reference.base)))
    dtype_key = threshold_class(fmt.name, path, lambda: _dtype_key(bundle()))
    own = expected_error(fmt.name, path, dtype_key)
    between = _runtime_gap(reference, fmt.name, path)
    error = math.hypot(own, reference.error, between)
    noise = {"relative_error": error, "converted": own, "source": reference.error, "runtimes": between,
             "from": "tensor types" if fmt.name == "gguf" else "dtype"}
    limits = {**default_limits(dtype_key, error), **(thresholds or {})}
    choice = _converted_runtime(reference, fmt, path, bundle, generate)
    runtime = choice.runtime
    logits = Logits(runtime, reference.sequences)
    parts, agree = [], []
    for k, (text, ids) in enumerate(zip(reference.texts, reference.ids)):
        theirs = runtime.tokenize(text) if reference.has_tokenizer else None
        if theirs is not None:
            agree.append(list(theirs)[:ID_LIMIT] == ids)
        parts.append(compare(reference.source(k), logits(k)))
    # not measured (the converted runtime, or the source, carries no tokenizer) is None: "not compared"
    summary = {**aggregate(parts), "tokenization_agreement": sum(agree) / len(agree) if agree else None}
    stats = quality(reference, logits) if reference.corpus else None
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
        "memory": {"max_memory": reference.max_memory, "peak_rss": peak_rss(),      # generation included
                   "source_path": reference.choice.path, "source_why": reference.choice.why,
                   "converted_path": choice.path, "converted_why": choice.why},
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

