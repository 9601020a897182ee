"""llama.cpp importance matrices: read (GGUF, llama-imatrix's default, and the legacy .dat), checked
against a model, turned into the per-row weights `ggml_quantize_chunk` takes, and written as GGUF.

An entry is a weight matrix's statistics of its input: `sums` (for each matrix, an expert of a MoE
tensor or the one of a dense tensor, the sum over tokens of each input column's squared activation)
and `counts` (tokens per matrix). The importance of a column is sums / count, which is what
llama-quantize hands the quantizer (tools/quantize/quantize.cpp, load_imatrix): a matrix no token
reached gets 1s; a legacy file stores (sum / count) * ncall with one ncall per entry.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import CorruptInputError, UsageError, quoted

SUMS, COUNTS = ".in_sum2", ".counts"


@dataclass
class Entry:
    sums: np.ndarray            # float32 [matrices, columns]
    counts: np.ndarray          # float32 [matrices]; a legacy file: [ncall] for all its matrices

    @property
    def columns(self) -> int:
        return self.sums.shape[-1]


@dataclass
class Imatrix:
    entries: dict[str, Entry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    source: str | None = None      # the file it came from, for messages and quantize.imatrix.file

    def importance(self, name: str) -> np.ndarray | None:
        """[matrices, columns] float32 weights for tensor `name`'s rows, as llama-quantize computes them."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        if self.legacy:
            ncall = float(entry.counts[0]) if entry.counts.size else 0.0
            return (entry.sums / ncall if ncall > 0 else entry.sums).astype(np.float32)
        out = np.ones_like(entry.sums, dtype=np.float32)
        reached = entry.counts > 0
        out[reached] = entry.sums[reached] / entry.counts[reached, None]
        return out

    def check(self, tensors: dict[str, tuple[int, ...]]) -> None:
        """Every entry must name a tensor of the model with the same input columns (per expert): a usage
        error names the first one that does not. token_embd is never an activation llama.cpp records."""
        where = self.source or "imatrix"
        for name in sorted(self.entries):
            entry = self.entries[name]
            shape = tensors.get(name)
            if shape is None:
                raise UsageError(f"--imatrix does not match this model: it has {quoted(name)}, which the model has "
                                 f"not (an imatrix of another model?)", where)
            matrices = shape[0] if len(shape) == 3 else 1
            if entry.sums.size != shape[-1] * matrices:
                raise UsageError(f"--imatrix does not match this model: {quoted(name)} has {entry.sums.size} values, "
                                 f"the model's tensor {shape[-1]} columns x {matrices} matrices", where)
            if not np.isfinite(entry.sums).all():
                raise UsageError(f"--imatrix {quoted(name)} has values that are not finite", where)

    def save(self, path: Path) -> None:
        """The GGUF format llama-imatrix writes (save_imatrix): general.type, the datasets, chunk count and
        size, and per entry `<name>.in_sum2` [matrices, columns] and `<name>.counts` [matrices, 1], in name
        order. A legacy entry's values already are means times ncall, so they keep their meaning."""
        import gguf
        writer = gguf.GGUFWriter(path, arch="")
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(gguf.Keys.IMatrix.DATASETS, list(self.datasets))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(self.chunk_count))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(self.chunk_size))
        for name in sorted(self.entries):
            entry = self.entries[name]
            writer.add_tensor(name + SUMS, np.ascontiguousarray(entry.sums, dtype=np.float32))
            writer.add_tensor(name + COUNTS, np.ascontiguousarray(entry.counts, dtype=np.float32).reshape(-1, 1))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def read(path: Path) -> Imatrix:
    """An imatrix file in either format (GGUF is recognised by its magic, as llama.cpp's loader does)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError("--imatrix: no such file", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        found = _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)
    except (ValueError, struct.error, IndexError, KeyError) as exc:
        raise CorruptInputError(f"not a llama.cpp imatrix file ({exc})", path) from None
    found.source = str(path)
    if not found.entries:
        raise CorruptInputError("imatrix file has no entries", path)
    return found


def _read_gguf(path: Path) -> Imatrix:
    import gguf
    reader = gguf.GGUFReader(path)
    by_name: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        for suffix in (SUMS, COUNTS):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise ValueError(f"{t.name} is {t.tensor_type.name}, not F32")
                by_name.setdefault(t.name[: -len(suffix)], {})[suffix] = np.array(t.data, dtype=np.float32)
    entries = {}
    for name, parts in by_name.items():
        if len(parts) != 2:
            raise ValueError(f"{name} has sums without counts or counts without sums")
        counts = np.rint(parts[COUNTS].reshape(-1))
        if parts[SUMS].size % counts.size:
            raise ValueError(f"{name}: {parts[SUMS].size} sums for {counts.size} counts")
        entries[name] = Entry(parts[SUMS].reshape(counts.size, -1), counts.astype(np.float32))

    def value(key: str, default):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    datasets = value(gguf.Keys.IMatrix.DATASETS, [])
    return Imatrix(entries, list(datasets) if isinstance(datasets, list) else [str(datasets)],
                   int(value(gguf.Keys.IMatrix.CHUNK_COUNT, 0)), int(value(gguf.Keys.IMatrix.CHUNK_SIZE, 0)))


def _read_legacy(path: Path) -> Imatrix:
    """common_imatrix_load_legacy: int32 entries, then per entry a name, ncall, nval and nval floats;
    optionally the chunk count and the dataset's name."""
    data = path.read_bytes()
    at = 0

    def take(fmt: str):
        nonlocal at
        values = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return values

    (n_entries,) = take("i")
    if n_entries < 1 or n_entries > len(data) // 12:
        raise ValueError(f"{n_entries} entries")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("i")
        if not 0 < length <= len(data) - at:
            raise ValueError(f"a name of {length} bytes")
        name = data[at:at + length].decode("utf-8")
        at += length
        ncall, nval = take("ii")
        if not 0 < nval <= (len(data) - at) // 4:
            raise ValueError(f"{name}: {nval} values")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=at).astype(np.float32)
        at += 4 * nval
        entries[name] = Entry(sums.reshape(1, -1), np.array([ncall], dtype=np.float32))
    chunks, datasets = 0, []
    if len(data) - at >= 4:
        (chunks,) = take("i")
        if len(data) - at >= 4:
            (length,) = take("i")
            if 0 < length <= len(data) - at:
                datasets.append(data[at:at + length].decode("utf-8", errors="replace"))
    return Imatrix(entries, datasets, chunks, 0, legacy=True)

