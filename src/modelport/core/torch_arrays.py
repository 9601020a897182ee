"""torch tensors as numpy arrays and back, sharing memory, bfloat16 and float8 included.

The interchange is numpy (conversions between safetensors and GGUF never need torch); pickled
checkpoints, DCP and the transformers runtime are torch's. numpy has no bfloat16, so those pass
through an integer view of the same bytes into ml_dtypes' type. Only modules that already use torch
import this one.
"""
from __future__ import annotations

import numpy as np
import torch

from .dtypes import numpy_dtype

# torch dtypes numpy cannot hold, and the integer type of the same width whose view carries their bytes
_VIA = {torch.bfloat16: torch.int16, torch.float8_e4m3fn: torch.uint8, torch.float8_e5m2: torch.uint8}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy; the array keeps the tensor alive)."""
    tensor = tensor.detach()
    via = _VIA.get(tensor.dtype)
    if via is None:
        return tensor.numpy()
    return tensor.view(via).numpy().view(numpy_dtype(dtype_name(tensor.dtype)))


def to_torch(array: np.ndarray) -> torch.Tensor:
    """The array's memory as a torch tensor (no copy when the array is writable and contiguous)."""
    target = getattr(torch, array.dtype.name)
    if array.size == 0:
        return torch.empty(array.shape, dtype=target)
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = array.copy(order="C")       # np.ascontiguousarray would turn a 0-d array into a 1-d one
    via = _VIA.get(target)
    if via is None:
        return torch.from_numpy(array)
    return torch.from_numpy(array.view(np.dtype(dtype_name(via)))).view(target)
