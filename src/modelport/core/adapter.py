"""A LoRA adapter as data: which base tensors it changes, by which low-rank pair, at what scale.

PEFT saves, for each adapted module, A (rank x in) and B (out x rank); the module then computes
W + scale * B @ A. An adapter bundle (formats/peft) carries this description beside its base's config;
the GGUF writer turns each pair into llama.cpp's `lora_a`/`lora_b`, and `--merge-adapter` adds the
product to the base tensors as they stream by (edits/merge_adapter.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .bundle import TensorRef


@dataclass(frozen=True)
class LoraModule:
    """One adapted base tensor `target` (its HF name): W gains scale * B @ A.

    `embedding`: an nn.Embedding's pair (PEFT's lora_embedding_A/B), whose product is W transposed:
    A is (rank x vocab), B (hidden x rank). `fan_in_fan_out`: W is stored (in x out), like GPT-2's
    Conv1D, so the product is transposed too. `magnitude`: DoRA's per-row norm the result is scaled to.
    """

    target: str
    a: TensorRef
    b: TensorRef
    scale: float
    embedding: bool = False
    fan_in_fan_out: bool = False
    magnitude: TensorRef | None = None

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def transposed(self) -> bool:
        """Whether W's rows are the product's columns (W = (B @ A).T)."""
        return self.embedding or self.fan_in_fan_out

    @property
    def delta_shape(self) -> tuple[int, int]:
        """The shape of the change to W, as W is stored."""
        out, inner = self.b.shape[0], self.a.shape[1]
        return (inner, out) if self.transposed else (out, inner)


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter folder: its settings, its pairs, and the tensors it saves whole."""

    path: Path
    settings: dict                                   # adapter_config.json as saved
    modules: tuple[LoraModule, ...]
    whole: dict[str, TensorRef] = field(default_factory=dict)   # base name -> replacement (modules_to_save, biases)
    base: Path | None = None                         # the base model folder, when one was found
    # base tensors saved beside their pair (`...base_layer.weight`: PEFT's save_embedding_layers), by base name
    copies: dict[str, TensorRef] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        return float(self.settings.get("lora_alpha", 8))

    @property
    def rank(self) -> int:
        return int(self.settings.get("r", 8))

    @property
    def rslora(self) -> bool:
        return bool(self.settings.get("use_rslora"))

    @property
    def dora(self) -> bool:
        return bool(self.settings.get("use_dora")) or any(m.magnitude is not None for m in self.modules)

    def describe(self) -> dict:
        """What `inspect` shows."""
        ranks = sorted({m.rank for m in self.modules})
        return {
            "peft_type": self.settings.get("peft_type", "LORA"),
            "base_model": self.settings.get("base_model_name_or_path"),
            "base_model_found": str(self.base) if self.base else None,
            "rank": ranks[0] if len(ranks) == 1 else ranks,
            "alpha": self.alpha,
            "rslora": self.rslora,
            "dora": self.dora,
            "target_modules": _listed(self.settings.get("target_modules")),
            "modules_to_save": _listed(self.settings.get("modules_to_save")),
            "adapted_tensors": len(self.modules),
            "whole_tensors": sorted(self.whole),
            "scales": sorted({round(m.scale, 6) for m in self.modules}),
        }


def _listed(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else sorted(value)
