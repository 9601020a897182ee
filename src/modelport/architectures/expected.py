"""The tensors an architecture expects, asked of transformers on the meta device (no memory)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
import json

import torch

from ..errors import UnknownArchitectureError
from .registry import ArchitectureSpec


@dataclass(frozen=True)
class ExpectedTensors:
    shapes: dict[str, tuple[int, ...]]
    tied: dict[str, str]          # alias -> tensor it is tied to (only when the config ties them)
    base_model_prefix: str


def expected_tensors(spec: ArchitectureSpec, config: dict) -> ExpectedTensors:
    if spec.expected_tensors is not None:
        return ExpectedTensors(spec.expected_tensors(config), dict(spec.tied_weights), "")
    return _from_transformers(spec.hf_class, json.dumps(config, sort_keys=True))


@lru_cache(maxsize=8)
def _from_transformers(hf_class: str, config_json: str) -> ExpectedTensors:
    import transformers
    from transformers import AutoConfig

    config = json.loads(config_json)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hf_config = AutoConfig.for_model(**config)
        except (ValueError, KeyError) as exc:
            raise UnknownArchitectureError(f"transformers cannot build config: {exc}") from exc
        names = [a for a in config.get("architectures") or [] if hasattr(transformers, a)]
        cls = getattr(transformers, names[0] if names else hf_class)
        with torch.device("meta"):
            if hasattr(cls, "from_config"):
                model = cls.from_config(hf_config)
            else:
                model = cls(hf_config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {}) if _ties(hf_config) else {}
    return ExpectedTensors(shapes, tied, getattr(model, "base_model_prefix", ""))


def _ties(hf_config) -> bool:
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    return bool(getattr(text, "tie_word_embeddings", False))
