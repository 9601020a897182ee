"""A safetensors file written as a stream, one tensor at a time.

The safetensors library's `save_file` needs every tensor of a file in memory at once. Its format
is an 8-byte header length, a JSON header with each tensor's dtype, shape and byte range, then the
data; since a ModelBundle knows every shape and dtype up front, the header is written first and the
data streamed after it, and the result is read back by the library itself in the tests.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import torch

from ..dtypes import SAFETENSORS_CODES


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def header_bytes(tensors: Iterable[PlannedTensor], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": SAFETENSORS_CODES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)   # the data section starts 8-byte aligned, as the library writes it
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's raw little-endian bytes without a copy when it is already contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """Write a planned file: header now, then `write(name, tensor)` in plan order."""

    def __init__(self, path: Path, plan: list[PlannedTensor], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.plan = plan
        self._next = 0
        self._file: BinaryIO = open(path, "wb")
        self._file.write(header_bytes(plan, metadata))

    def write(self, name: str, tensor: torch.Tensor) -> int:
        expected = self.plan[self._next]
        if name != expected.name or tuple(tensor.shape) != expected.shape or tensor.dtype != expected.dtype:
            raise ValueError(f"{self.path}: got {name} {tuple(tensor.shape)} {tensor.dtype}, planned {expected}")
        data = tensor_bytes(tensor)
        self._file.write(data)
        self._next += 1
        return len(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._next != len(self.plan):
            raise ValueError(f"{self.path}: wrote {self._next} of {len(self.plan)} planned tensors")

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()
