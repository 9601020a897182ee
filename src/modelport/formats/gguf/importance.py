"""The importance matrix of one GGUF write: where it comes from (--imatrix, or --imatrix-corpus run on
a GGUF of the model), whether it fits the model, and the weights each tensor is quantized with.

llama-quantize's rules apply: a tensor whose target type cannot be made blind (tensor_requires_imatrix)
stops the write before any data is written, naming --imatrix/--imatrix-corpus; a tensor the imatrix
has no entry for is quantized without one, as llama-quantize does (token_embd and output never have
one); float tensors never use it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as FT

from ...core.errors import UsageError, quoted
from ...files.atomic import atomic_output
from . import GGUFOptions
from .imatrix import Imatrix, read
from .quant_types import FLOAT_TYPES, requires_imatrix
from .quantize import Importance

if TYPE_CHECKING:
    from .calibrate import CalibrationSettings

QUANTIZE_KEYS = ("quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                 "quantize.imatrix.chunks_count")


def refuse_blind(types: dict[str, Q], ftype: FT, quant: str) -> None:
    """Without an imatrix, the first tensor llama-quantize would refuse to quantize is a usage error."""
    for name, qtype in types.items():
        if requires_imatrix(name, qtype, ftype):
            raise UsageError(f"--quant {quant} needs an importance matrix ({name} would be {qtype.name}): give "
                             f"--imatrix FILE or --imatrix-corpus FILE|builtin")


def obtain(options: GGUFOptions, calibrate: "Callable[[CalibrationSettings], Imatrix]") -> Imatrix | None:
    """The imatrix the options ask for: read from --imatrix, or computed over --imatrix-corpus by
    `calibrate` (llama.cpp's run on a GGUF of the model); kept at --save-imatrix when asked."""
    if options.imatrix is not None:
        found = read(options.imatrix)
    elif options.calibration is not None:
        found = calibrate(options.calibration)
    else:
        return None
    if options.save_imatrix is not None:
        with atomic_output(options.save_imatrix) as tmp:
            found.save(tmp)
        found.source = str(options.save_imatrix)
    return found


def weights(imatrix: Imatrix, shapes: dict[str, tuple[int, ...]], types: dict[str, Q],
            ftype: FT) -> dict[str, Importance]:
    """The rows' importance of each tensor quantized to `types` (GGUF name -> type); the imatrix is checked
    first against the model's tensors (`shapes`, rows first: names, columns per matrix)."""
    imatrix.check(shapes)
    out = {}
    for name, qtype in types.items():
        shape = shapes[name]
        if qtype in FLOAT_TYPES:
            continue
        vectors = imatrix.importance(name)
        if vectors is None:
            if requires_imatrix(name, qtype, ftype):
                raise UsageError(f"--imatrix has no entry for {quoted(name)}, which {qtype.name} cannot be made "
                                 f"without", imatrix.source)
            continue
        rows = int(np.prod(shape[:-1]))
        out[name] = Importance(vectors, rows // vectors.shape[0])
    return out


def add_metadata(writer: gguf.GGUFWriter, imatrix: Imatrix) -> None:
    """The keys llama-quantize adds for its --imatrix (tools/quantize/quantize.cpp, kv overrides)."""
    file_key, dataset_key, entries_key, chunks_key = QUANTIZE_KEYS
    if imatrix.source:
        writer.add_string(file_key, imatrix.source[:127])
    if imatrix.datasets:
        writer.add_string(dataset_key, imatrix.datasets[0][:127])
    writer.add_uint32(entries_key, len(imatrix.entries))
    if imatrix.chunk_count > 0:
        writer.add_uint32(chunks_key, imatrix.chunk_count)
