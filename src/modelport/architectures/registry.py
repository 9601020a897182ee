"""The one registry of model families, extended by built-in specs and plugins alike.

A spec is data first: which HF `model_type`s it covers and what differs between formats. The
tensors a model of that family must have are taken from transformers itself (the model built on
the meta device), so a spec never restates what transformers already knows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..errors import UnknownArchitectureError

if TYPE_CHECKING:
    from .gguf_mapping import GGUFMapping

PLUGIN_DOC = "docs/architectures.md"


@dataclass(frozen=True)
class ArchitectureSpec:
    """What modelport needs to know about one model family.

    `hf_class` is the transformers class whose parameters define the expected tensors when the
    config's `architectures` entry is absent or unknown; `expected_tensors` lets a plugin for a
    model transformers does not ship state them itself (name -> shape, from the config).
    """

    model_type: str
    hf_class: str = "AutoModelForCausalLM"
    aliases: tuple[str, ...] = ()
    expected_tensors: Callable[[dict], dict[str, tuple[int, ...]]] | None = None
    tied_weights: dict[str, str] = field(default_factory=dict)
    gguf: "GGUFMapping | None" = None


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add (or replace) a family; returns the spec so modules can keep a name for it."""
    for name in (spec.model_type, *spec.aliases):
        _REGISTRY[name] = spec
    return spec


def supported_model_types() -> list[str]:
    return sorted({spec.model_type for spec in _REGISTRY.values()})


def spec_for(config: dict, source: object = None) -> ArchitectureSpec:
    model_type = config.get("model_type")
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise UnknownArchitectureError(
        f"unknown architecture {model_type!r}; supported: {', '.join(supported_model_types())}. "
        f"To add one, register an ArchitectureSpec (see {PLUGIN_DOC})",
        source,
    )
