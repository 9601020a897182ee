"""GGUF headers parsed with every count, size and offset checked before it is trusted.

gguf-py's GGUFReader maps the whole file and believes its tables: an array count of 2^40 or an
array of arrays makes it allocate without bound, and a tensor whose offset points into another
tensor is read as given. This parser applies the rules of llama.cpp's own loader (ggml/src/gguf.cpp):
no nested arrays, no empty or duplicate keys or tensor names, names under 64 bytes, at most 4
dimensions, rows a whole number of blocks, and tensor data laid out in table order, each tensor at
the aligned end of the one before. Beyond it, the file must end where the table says its data ends
(a lowered tensor count or a shrunken type leaves bytes no tensor owns), every string must be
UTF-8 and scalar floats finite. Every count is checked against the bytes left before anything is
allocated, so no input makes it loop or allocate past the file's own size.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
)

from ...core.errors import CorruptInputError, quoted
from ...storage import byte_source

V = GGUFValueType
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i", V.FLOAT32: "f",
    V.BOOL: "?", V.UINT64: "Q", V.INT64: "q", V.FLOAT64: "d",
}
MAX_NAME = 64               # GGML_MAX_NAME: llama.cpp refuses longer tensor names
MAX_DIMS = 4
MIN_KV_BYTES = 8 + 1 + 4 + 1            # key length, one key byte, type, one value byte
MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8   # name length, n_dims, type, offset


@dataclass(frozen=True)
class Field:
    """One metadata value with the GGUF types it was stored as (so it can be written back unchanged)."""

    type: GGUFValueType
    value: Any
    item_type: GGUFValueType | None = None     # element type of an array


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]       # rows first, as torch and numpy order them (GGUF lists the fastest first)
    qtype: GGMLQuantizationType
    offset: int                  # absolute byte offset in `file`
    nbytes: int
    file: Path                   # the file (the shard, of a split model) holding its data

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    fields: dict[str, Field]
    tensors: list[TensorInfo]
    alignment: int
    data_start: int
    file_size: int
    shards: tuple[Path, ...] = ()       # every file of a split model (shards.py), first to last

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        return default if field is None else field.value

    @property
    def architecture(self) -> str | None:
        arch = self.get("general.architecture")
        return arch if isinstance(arch, str) else None


class _Cursor:
    """Reads forward through the file (a mapping, or a remote scan); every read is checked against the bytes left."""

    def __init__(self, data: Any, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def fail(self, message: str) -> CorruptInputError:
        return CorruptInputError(f"not a valid GGUF file: {message}", self.path)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise self.fail(f"the file ends inside {what} (needs {n} bytes at offset {self.pos}, "
                            f"{self.left} left; truncated?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack_from("<" + fmt, self.take(size, what))[0]

    def string(self, what: str) -> str:
        length = self.unpack("Q", what)
        raw = self.take(length, what) if length <= self.left else self._too_long(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not UTF-8 (byte {exc.start})") from None

    def _too_long(self, length: int, what: str) -> bytes:
        raise self.fail(f"{what} claims {length} bytes, more than the {self.left} left in the file")


def read_header(path: Path) -> GGUFHeader:
    """Parse and check `path`'s header, metadata and tensor table (never its tensor data)."""
    try:
        source = byte_source(path)
        size = source.size
        if size < 24:
            raise CorruptInputError(f"not a valid GGUF file: {size} bytes is too short for a GGUF header", path)
        with source.scan() as data:
            return _parse(_Cursor(data, path), path, size)
    except OSError as exc:
        raise CorruptInputError(f"cannot read: {exc.strerror or exc}", path) from exc


def _parse(cur: _Cursor, path: Path, file_size: int) -> GGUFHeader:
    if cur.unpack("I", "the magic") != GGUF_MAGIC:
        raise cur.fail("does not start with the GGUF magic")
    version = cur.unpack("I", "the version")
    if version & 0xFFFF == 0:
        raise cur.fail(f"version field {version:#x} reads as a big-endian file, which is not supported")
    if version not in (2, 3):
        raise cur.fail(f"GGUF version {version} is not supported (2 and 3 are)")
    n_tensors = cur.unpack("Q", "the tensor count")
    n_kv = cur.unpack("Q", "the metadata count")
    if n_kv * MIN_KV_BYTES > cur.left:
        raise cur.fail(f"metadata count {n_kv} cannot fit in the {cur.left} bytes left")
    if n_tensors * MIN_TENSOR_INFO_BYTES > cur.left:
        raise cur.fail(f"tensor count {n_tensors} cannot fit in the {cur.left} bytes left")
    fields: dict[str, Field] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        if not key:
            raise cur.fail(f"metadata key {i} is empty")
        if key in fields:
            raise cur.fail(f"metadata key {quoted(key)} appears twice")
        fields[key] = _value(cur, key)
    alignment = _alignment(cur, fields)
    infos = [_tensor_info(cur, i) for i in range(n_tensors)]
    names = set()
    for name, *_ in infos:
        if name in names:
            raise cur.fail(f"tensor name {quoted(name)} appears twice")
        names.add(name)
    data_start = -(-cur.pos // alignment) * alignment if infos else cur.pos
    return GGUFHeader(path, version, fields, _laid_out(cur, infos, data_start, alignment, file_size),
                      alignment, data_start, file_size)


def _value(cur: _Cursor, key: str) -> Field:
    what = f"metadata key {quoted(key)}"
    vtype = _value_type(cur.unpack("I", what), cur, what)
    if vtype == V.STRING:
        return Field(vtype, cur.string(what))
    if vtype != V.ARRAY:
        value = cur.unpack(SCALAR_FORMATS[vtype], what)
        if isinstance(value, float) and not math.isfinite(value):
            raise cur.fail(f"{what} is {value}, not a finite number")
        return Field(vtype, value)
    item = _value_type(cur.unpack("I", what), cur, what)
    if item == V.ARRAY:
        raise cur.fail(f"{what} is an array of arrays, which GGUF does not allow")
    count = cur.unpack("Q", what)
    if item == V.STRING:
        if count * 8 > cur.left:
            raise cur.fail(f"{what} claims {count} strings, more than the {cur.left} bytes left can hold")
        return Field(vtype, [cur.string(f"{what}[{i}]") for i in range(count)], item)
    fmt = SCALAR_FORMATS[item]
    width = struct.calcsize(fmt)
    if count * width > cur.left:
        raise cur.fail(f"{what} claims {count} values, more than the {cur.left} bytes left can hold")
    raw = cur.take(count * width, what)
    return Field(vtype, list(struct.unpack_from(f"<{count}{fmt}", raw)), item)


def _value_type(code: int, cur: _Cursor, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise cur.fail(f"{what} has unknown value type {code}") from None


def _alignment(cur: _Cursor, fields: dict[str, Field]) -> int:
    field = fields.get("general.alignment")
    if field is None:
        return GGUF_DEFAULT_ALIGNMENT
    if field.type != V.UINT32 or field.value == 0 or field.value & (field.value - 1):
        raise cur.fail(f"general.alignment {field.value!r} is not a power of two stored as uint32")
    return field.value


def _tensor_info(cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = cur.string(f"tensor name {i}")
    what = f"tensor {quoted(name)}"
    if len(name.encode("utf-8")) >= MAX_NAME:
        raise cur.fail(f"{what}: name is {len(name.encode())} bytes; GGUF allows at most {MAX_NAME - 1}")
    n_dims = cur.unpack("I", what)
    if n_dims > MAX_DIMS:
        raise cur.fail(f"{what} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")
    dims = [cur.unpack("Q", what) for _ in range(n_dims)]
    if any(d >= 2**63 for d in dims) or math.prod(dims) >= 2**63:
        raise cur.fail(f"{what} has dimensions {dims} whose element count does not fit in 64 bits")
    code = cur.unpack("I", what)
    try:
        qtype = GGMLQuantizationType(code)
        block, _ = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise cur.fail(f"{what} has unknown tensor type {code}") from None
    if dims and dims[0] % block:
        raise cur.fail(f"{what} of type {qtype.name} has rows of {dims[0]} values, not a multiple of its block "
                       f"size {block}")
    offset = cur.unpack("Q", what)
    return name, tuple(reversed(dims)), qtype, offset


def _laid_out(cur: _Cursor, infos: list, data_start: int, alignment: int, file_size: int) -> list[TensorInfo]:
    """Tensor infos with absolute offsets, each checked to sit where the table order puts it."""
    tensors = []
    expected = 0
    for name, shape, qtype, offset in infos:
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = math.prod(shape) // block * type_size
        what = f"tensor {quoted(name)}"
        if offset != expected:
            raise cur.fail(f"{what} says its data is at offset {offset}, but the tensors before it end at "
                           f"{expected} (the tensor table lies: an offset or a type was changed)")
        if data_start + offset + nbytes > file_size:
            raise cur.fail(f"{what} ({qtype.name}, {list(shape)}) needs bytes up to "
                           f"{data_start + offset + nbytes}, but the file has {file_size} (truncated?)")
        tensors.append(TensorInfo(name, shape, qtype, data_start + offset, nbytes, cur.path))
        expected = -(-(offset + nbytes) // alignment) * alignment
    end = data_start + expected
    if tensors and file_size > end:
        raise cur.fail(f"{file_size - end} bytes after the last tensor's data belong to no tensor "
                       f"(the tensor table lies: a count or a type was changed)")
    return tensors
