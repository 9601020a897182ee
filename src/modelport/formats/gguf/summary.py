"""What a GGUF holds, from its header alone: its file type, the GGML types of its tensors, bits per
weight, and its vocabulary (model, pre-tokenizer, size, special ids, chat template), with whether
modelport can rebuild an HF tokenizer from it and, if not, why. `inspect` shows this beside the
bundle, which only says what a conversion would produce (every quantized tensor dequantizes to a float).
"""
from __future__ import annotations

from pathlib import Path

from gguf import LlamaFileType

from .header import GGUFHeader
from .shards import read_model
from . import tokenizer_rebuild

SPECIAL_IDS = ("bos", "eos", "unknown", "seperator", "padding", "cls", "mask", "eot", "eom")


def file_type_name(value: object) -> str | None:
    """llama.cpp's name for `general.file_type` (15 -> "Q4_K_M"); the number as text when unknown."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    guessed = value & LlamaFileType.GUESSED
    try:
        name = LlamaFileType(value & ~LlamaFileType.GUESSED).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return str(value)
    return f"{name} (guessed)" if guessed else name


def tensor_types(header: GGUFHeader) -> dict[str, dict[str, int]]:
    """GGML type name -> {"tensors": count, "bytes": their data}, most bytes first."""
    found: dict[str, dict[str, int]] = {}
    for t in header.tensors:
        entry = found.setdefault(t.qtype.name, {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += t.nbytes
    return dict(sorted(found.items(), key=lambda kv: -kv[1]["bytes"]))


def bits_per_weight(header: GGUFHeader) -> float | None:
    """Tensor bytes * 8 / values, as llama.cpp's loader prints it (BPW)."""
    values = sum(_count(t.shape) for t in header.tensors)
    return round(sum(t.nbytes for t in header.tensors) * 8 / values, 2) if values else None


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def vocabulary(header: GGUFHeader, pre_tokenizer: str | None = None) -> dict:
    """The tokenizer the metadata describes, and whether (and why not) it can be rebuilt."""
    tokens = header.get("tokenizer.ggml.tokens") or []
    special = {name: value for name in SPECIAL_IDS
               if isinstance(value := header.get(f"tokenizer.ggml.{name}_token_id"), int)}
    trouble = tokenizer_rebuild.problem(header, pre_tokenizer)
    return {"model": header.get("tokenizer.ggml.model"), "pre": header.get("tokenizer.ggml.pre"),
            "size": len(tokens), "special_ids": special,
            "chat_template": bool(header.get("tokenizer.chat_template")),
            "rebuildable": trouble is None, "why_not": trouble.reason if trouble else None}


def details(path: Path) -> dict:
    """inspect's GGUF section: what the file itself holds (`dtypes` and `bytes` are its own GGML types and
    tensor bytes, not the floats a conversion makes of them)."""
    header = read_model(path)
    types = tensor_types(header)
    return {"file_type": file_type_name(header.get("general.file_type")),
            "dtypes": {name: entry["tensors"] for name, entry in types.items()},
            "bytes": sum(entry["bytes"] for entry in types.values()),
            "tensor_types": types,
            "bits_per_weight": bits_per_weight(header),
            "vocabulary": vocabulary(header)}
