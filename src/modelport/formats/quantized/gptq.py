"""`quant_method: gptq` (AutoGPTQ / GPTQModel checkpoints).

A linear layer `L` of `in` inputs and `out` outputs is stored transposed, as `L.qweight` (int32,
in*bits/32 x out: each word holds 32/bits consecutive inputs, the first in the lowest bits),
`L.qzeros` (int32, groups x out*bits/32, packed the same way along the outputs), `L.scales`
(groups x out) and `L.g_idx` (the group of each input; with `desc_act` the groups follow the order the
quantizer visited the columns in, so they are not runs). The weight is, for output o and input i,
scales[g_idx[i], o] * (q[i, o] - z[g_idx[i], o]), where the zeros of the original `gptq` checkpoint
format are stored one less than they are (GPTQModel's `gptq_v2` stores them as they are). A row block
of the weight is a column block of the stored tensors: only the pages holding those columns are read.
"""
from __future__ import annotations

from pathlib import Path

from ...core.bundle import TensorRef
from ...core.errors import ModelConversionError
from .compressed import unpack
from .parts import Quantization, dequantized_ref, needed

STORED = "qweight, qzeros, scales"    # what it stores (named when a checkpoint holds none)
BITS = (2, 4, 8)


def whole(ref: TensorRef):
    """The stored tensor without copying it: a mapping whose pages are read as they are touched."""
    return ref.load_rows(0, ref.shape[0]) if ref.shape and ref.rows is not None else ref.load()


def dequantized(name: str, qweight: TensorRef, qzeros: TensorRef, scales: TensorRef, g_idx: TensorRef | None,
                bits: int, offset: int) -> TensorRef:
    import numpy as np
    per_word = 32 // bits
    inputs, outputs = qweight.shape[0] * per_word, qweight.shape[1]
    group = -(-inputs // scales.shape[0])

    def rows(start: int, stop: int):
        q = unpack(np.ascontiguousarray(whole(qweight)[:, start:stop]).T, bits)          # (outputs, inputs)
        first = start // per_word
        z = unpack(np.ascontiguousarray(whole(qzeros)[:, first:-(-stop // per_word)]), bits)
        z = z[:, start - first * per_word:stop - first * per_word] + offset                  # (groups, outputs)
        s = np.asarray(whole(scales)[:, start:stop], dtype=np.float32)
        groups = np.asarray(g_idx.load(), dtype=np.int64) if g_idx is not None else np.arange(inputs) // group
        return (s[groups].T * (q - z[groups].T).astype(np.float32)).astype(np.float32)
    return dequantized_ref(name, (outputs, inputs), rows, qweight.source)


def read(refs: dict[str, TensorRef], settings: dict, config_path: Path) -> tuple[dict[str, TensorRef], Quantization]:
    bits = settings.get("bits")
    if bits not in BITS:
        raise ModelConversionError(f"gptq with {bits!r} bits is not supported (modelport reads 2, 4 and 8)",
                                   config_path)
    fmt = str(settings.get("checkpoint_format") or "gptq")
    offset = 1 if fmt == "gptq" else 0
    out = dict(refs)
    count = 0
    for name in refs:
        if not name.endswith(".qweight"):
            continue
        base = name.removesuffix(".qweight")
        parts = [needed(refs, base + suffix, name, role)
                 for suffix, role in ((".qzeros", "the zero points"), (".scales", "the scales"))]
        g_idx = refs.get(base + ".g_idx")
        out[base + ".weight"] = dequantized(base + ".weight", refs[name], *parts, g_idx, bits, offset)
        for part in (name, *(p.name for p in parts), *([g_idx.name] if g_idx else [])):
            del out[part]
        count += 1
    group = settings.get("group_size")
    block = f"group {group}" if isinstance(group, int) and group > 0 else "channel"
    act = ", desc_act" if settings.get("desc_act") else ""
    return out, Quantization("gptq", bits, block + act, format=fmt, weights=count)
