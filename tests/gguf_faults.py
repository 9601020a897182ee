"""Rewriting a GGUF with one planted fault, to prove verification catches it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import gguf
import numpy as np


def rewrite(src: Path, dst: Path, tensors: Callable[[dict[str, np.ndarray]], None] | None = None,
            fields: Callable[[dict[str, object]], None] | None = None) -> None:
    """Copy `src` to `dst`, letting `tensors` edit tensor arrays (floats as values, quantized types as
    their bytes, one row of blocks per array row) and `fields` edit metadata values."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    values = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    if fields:
        fields(values)
    arrays = {t.name: np.array(t.data) for t in reader.tensors}
    if tensors:
        tensors(arrays)
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, values[key], vtype, sub_type=sub)
    for t in reader.tensors:
        data = arrays[t.name]
        # a quantized tensor is its bytes, rows first (gguf-py takes their shape); any other, its elements
        shape = data.shape if data.dtype == np.uint8 else tuple(int(d) for d in reversed(t.shape))
        writer.add_tensor(t.name, data, raw_shape=shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
