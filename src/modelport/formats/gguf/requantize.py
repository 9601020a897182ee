"""GGUF -> GGUF as llama-quantize does it: the same tensors under the same names, each re-typed by
llama-quantize's rules (quant_types.py) or copied byte for byte when its type stays, and every
metadata key kept (general.*, the tokenizer, the chat template, keys no one here knows).

This is the one conversion that skips the HF interchange, on purpose: a GGUF's names, metadata and
architecture are already what the target needs, and going through HF names would drop whatever the
registry does not know (an architecture it has no spec for, a key it does not write). Only the
file type and the split layout change.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ...core.bundle import rows_per_block
from ...core.errors import CorruptInputError, UsageError
from ..base import ReadOptions
from ..companions import search_dirs
from . import GGUFOptions
from .header import GGUFHeader, TensorInfo
from .placed import PlacedData, summary
from .quant_types import FILE_TYPES, ModelShape, asked_quant, choose_types, file_type, nbytes
from .imatrix import Imatrix
from .importance import QUANTIZE_KEYS, add_metadata, obtain, refuse_blind, weights
from .quantize import Importance, to_type
from .reader import checked_header, read
from .tensor_data import FLOAT_TYPES, decode, raw_rows

# keys the writer itself sets for the new file
REWRITTEN = ("general.architecture", "general.alignment", "general.file_type", "general.quantization_version")


@dataclass(frozen=True)
class Block:
    """Rows [start, stop) of one tensor, in GGML rows (the last axis is a row)."""

    tensor: TensorInfo
    qtype: gguf.GGMLQuantizationType
    start: int
    stop: int


def _rows(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def model_shape(header: GGUFHeader) -> ModelShape:
    """What llama-quantize's rules ask of the model, from the metadata (per-layer arrays: layer 0's)."""
    arch = header.architecture or ""

    def first(key: str, default: int = 0) -> int:
        value = header.get(f"{arch}.{key}", default)
        value = value[0] if isinstance(value, list) and value else value
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    heads = first("attention.head_count", 1)
    return ModelShape(arch, first("block_count"), heads, first("attention.head_count_kv", heads), first("expert_count"))


def plan(header: GGUFHeader, quant: str | None, has_imatrix: bool = False) -> dict[str, gguf.GGMLQuantizationType]:
    if quant is None:
        return {t.name: t.qtype for t in header.tensors}
    return choose_types({t.name: t.shape for t in header.tensors}, file_type(quant), model_shape(header), has_imatrix)


def _importance(src: Path, header: GGUFHeader, types: dict, quant: str | None,
                options: GGUFOptions) -> tuple[Imatrix, dict[str, Importance]] | None:
    """The imatrix for the tensors that change type: --imatrix, or --imatrix-corpus run on the source itself."""
    changed = {t.name: types[t.name] for t in header.tensors if types[t.name] != t.qtype}
    if quant is None:
        if options.has_imatrix:
            raise UsageError("an importance matrix is for quantizing: give --quant")
        return None
    ftype = file_type(quant)
    if not options.has_imatrix:
        refuse_blind(changed, ftype, quant)
        return None
    from .calibrate import compute
    found = obtain(options, lambda settings: compute(src, settings, options.threads))
    return found, weights(found, {t.name: t.shape for t in header.tensors}, changed, ftype)


def write(src: Path, path: Path, options: GGUFOptions) -> dict:
    header = checked_header(src)          # the tables and the metadata checked as for any GGUF source
    if any((d / "config.json").is_file() for d in search_dirs(src, None)):
        read(src, ReadOptions())          # a config beside it must describe the same model (lazy: no tensor read)
    if header.architecture is None:
        raise CorruptInputError("has no general.architecture; llama.cpp could not run it either", src)
    quant = asked_quant(options.quant, options.dtype)      # None: every tensor keeps its type
    types = plan(header, quant, options.has_imatrix)
    importance = _importance(src, header, types, quant, options)
    writer = gguf.GGUFWriter(path, header.architecture, split_max_size=options.split_max_size)
    for key, field in header.fields.items():
        if key not in REWRITTEN and not key.startswith("split.") and not (importance and key in QUANTIZE_KEYS):
            writer.add_key_value(key, field.value, field.type, field.item_type)
    if importance is not None:
        add_metadata(writer, importance[0])
    weights_of = importance[1] if importance is not None else {}
    ftype = file_type(quant) if quant else header.get("general.file_type")
    if ftype is not None:
        writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for t in header.tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes(types[t.name], t.shape),
                               raw_dtype=types[t.name])
    data = PlacedData(writer)

    def produce(block: Block) -> int:
        t, rows = block.tensor, _rows(block.tensor.shape)
        raw = raw_rows(t, block.start, block.stop - block.start, t.nbytes // rows)
        if block.qtype != t.qtype:
            values = decode(raw, t.qtype, (block.stop - block.start, t.shape[-1]) if t.shape else t.shape)
            weight = weights_of.get(t.name)
            raw = to_type(values, block.qtype, threads=1, scratch=True,
                          importance=weight.at(block.start) if weight is not None else None)
        return data.put(t.name, block.start * (nbytes(block.qtype, t.shape) // rows), raw)

    work = []
    for t in header.tensors:
        rows = _rows(t.shape)
        step = rows_per_block(t.shape[-1] if t.shape else 1)
        work += [Block(t, types[t.name], i, min(rows, i + step)) for i in range(0, rows, step)]
    data.fill(work, produce, options.threads, f"writing {path.name}")
    return {**summary(path.parent, types.values()), "dtype": quant or _name(ftype),
            "architecture": header.architecture, "notes": _notes(header, types, src),
            "parameters": sum(int(np.prod(t.shape)) for t in header.tensors)}


def _name(ftype: int | None) -> str:
    return next((name for name, value in FILE_TYPES.items() if int(value) == ftype), "as the source")


def _notes(header: GGUFHeader, types: dict, src: Path) -> list[str]:
    requantized = [t.name for t in header.tensors if t.qtype not in FLOAT_TYPES and types[t.name] != t.qtype]
    kept = sum(1 for t in header.tensors if types[t.name] == t.qtype)
    notes = [f"{kept} of {len(types)} tensors kept their type and were copied byte for byte"]
    if requantized:
        notes.append(f"{len(requantized)} tensors were already quantized and are quantized again: the errors "
                     f"compound (llama-quantize's --allow-requantize), so compare against the original if you can")
    return notes
