"""The canonical interchange every reader produces and every writer consumes.

A ModelBundle is an HF-style config plus a lazy, ordered stream of tensors under HF names. Shapes
and dtypes are known from file headers, so writers can plan (shard layout, headers, memory) before
a single byte of weight data is read, and only one tensor at a time needs to be in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .dtypes import ITEMSIZE, cast

if TYPE_CHECKING:
    import numpy as np


ROW_BLOCK_BYTES = 16 * 2**20     # one block of streamed work, measured as float32


def rows_per_block(row_elements: int, unit: int = 1) -> int:
    """Rows in one block of streamed work: ROW_BLOCK_BYTES of float32 (the widest a cast or a quantizer
    makes a row), a whole number of `unit`s (attention heads) and at least one. Every writer that streams
    row blocks sizes them here, so one figure bounds the working set of all of them."""
    per_block = ROW_BLOCK_BYTES // (4 * max(1, row_elements))
    return max(unit, per_block // unit * unit)


@dataclass(frozen=True)
class RawRange:
    """Where a tensor's exact little-endian bytes lie in a file, so a writer can copy them kernel-side."""

    path: Path
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGMLBlocks:
    """A tensor's values as its source stores them, already GGML blocks of `ggml_type` (gpt-oss's MXFP4
    experts), so a GGUF can keep them bit for bit: `rows(start, stop)` gives entries [start, stop) of the
    first axis as bytes, with the tensor's last two axes swapped (the blocks run along its second-to-last)."""

    ggml_type: str
    rows: Callable[[int, int], "np.ndarray"] = field(repr=False, compare=False)


@dataclass(frozen=True)
class TensorRef:
    """A tensor that is not loaded yet: a numpy array when asked for, its dtype a name (core/dtypes.py).

    `alias_of` names the tensor this one is a tied copy of (e.g. lm_head re-tied to the input
    embedding); writers that follow HF conventions skip aliases, those that mirror
    `model.state_dict()` keep them.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    loader: Callable[[], "np.ndarray"] = field(repr=False, compare=False)
    source: str = ""
    alias_of: str | None = None
    raw: RawRange | None = field(default=None, compare=False)
    rows: Callable[[int, int], "np.ndarray"] | None = field(default=None, repr=False, compare=False)
    ggml: GGMLBlocks | None = field(default=None, compare=False)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]

    def load(self) -> "np.ndarray":
        array = self.loader()
        if tuple(array.shape) != self.shape or array.dtype.name != self.dtype:
            from .errors import CorruptInputError

            raise CorruptInputError(
                f"tensor {self.name!r} read as {tuple(array.shape)} {array.dtype.name}, "
                f"header says {self.shape} {self.dtype}",
                self.source or None,
            )
        return array

    def load_rows(self, start: int, stop: int) -> "np.ndarray":
        """Rows [start, stop) of the first dimension, read alone when the format allows it."""
        if self.rows is not None:
            return self.rows(start, stop)
        return self.load()[start:stop]

    def row_chunks(self, dtype: str) -> Iterator["np.ndarray"]:
        """The tensor as consecutive blocks of whole rows, each cast to `dtype`: never held whole."""
        rows = self.shape[0] if self.shape else 1
        step = rows_per_block(self.numel // max(rows, 1))
        for start in range(0, rows, step):
            yield cast(self.load_rows(start, min(rows, start + step)), dtype)

    def renamed(self, name: str, alias_of: str | None = None) -> "TensorRef":
        return replace(self, name=name, alias_of=alias_of)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class ModelBundle:
    """A model in canonical form: what a writer needs, nothing loaded until asked."""

    config: dict
    tensors: dict[str, TensorRef]
    source: Path
    format: str
    tokenizer_files: dict[str, Path] = field(default_factory=dict)
    generation_config: dict | None = None
    notes: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)    # tensor name -> its name in the source file
    unused: list[str] = field(default_factory=list)          # source tensors no target name takes
    quantization: dict | None = None                         # how a quantized source was stored (method, bits, block)
    adapter: Any = None                # a LoRA adapter (core.adapter.LoraAdapter, which builds on this module):
                                       # its pairs, `config` being its base's

    def __iter__(self) -> Iterator[TensorRef]:
        return iter(self.tensors.values())

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values() if t.alias_of is None)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values() if t.alias_of is None)

    def dtypes(self) -> dict[str, int]:
        """Tensor count per dtype name, the way `inspect` reports it."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            if t.alias_of is None:
                counts[t.dtype] = counts.get(t.dtype, 0) + 1
        return counts
