"""`--max-memory`: which path a model run in transformers takes, whole or layer-major, and what it cost.

The whole-model path holds every weight as float32; the layer-major path (runtimes/layerwise.py) holds
one module's weights and the sequences' activations. verify takes the whole path while its estimate
fits the budget (default: half the machine's memory), the layer-major one otherwise, and says which.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import UsageError
from ..core.sizes import human

if TYPE_CHECKING:
    from ..core.bundle import ModelBundle
    from ..runtimes.base import Runtime

WHOLE = "whole-model"
LAYER_MAJOR = "layer-major"
MAPPED = "mapped"           # llama.cpp and onnxruntime map or load their files themselves


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_max_memory() -> int:
    """Half the machine's memory: room for the converted model's runtime beside the reference."""
    return physical_memory() // 2


def peak_rss() -> int:
    """This process's peak resident set so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Choice:
    """A transformers runtime, the path it takes and why."""

    runtime: "Runtime"
    path: str
    why: str
    holds: int = 0          # bytes it keeps while the other side runs (the whole model's weights)


def transformers_runtime(bundle: "ModelBundle", max_memory: int, explicit: bool) -> Choice:
    """The bundle in transformers: whole when its float32 weights fit `max_memory`, else layer-major; a
    family that cannot run layer-major runs whole, unless the budget was given (`explicit`): then exit 2."""
    from ..runtimes.layerwise import LayerwiseRuntime, build, whole_model_bytes
    from ..runtimes.transformers import TransformersRuntime

    whole = whole_model_bytes(bundle)
    if whole <= max_memory:
        return Choice(TransformersRuntime.open(bundle), WHOLE,
                      f"the whole model (~{human(whole)}) fits in {human(max_memory)}", whole)
    parts, why_not = build(bundle)
    if parts is None:
        if explicit:
            raise UsageError(f"--max-memory {human(max_memory)} is too small: this model runs only whole "
                             f"({why_not}), which needs about {human(whole)}")
        return Choice(TransformersRuntime.open(bundle), WHOLE,
                      f"the whole model (~{human(whole)}) exceeds {human(max_memory)}, and it cannot run "
                      f"layer-major: {why_not}", whole)
    return Choice(LayerwiseRuntime(bundle, parts, max_memory), LAYER_MAJOR,
                  f"the whole model (~{human(whole)}) exceeds {human(max_memory)}")
