"""The tensors an architecture expects on disk: from its spec's templates, or asked of transformers.

transformers 5 renames and fuses some families' tensors when it loads them (ViT's legacy names, MoE
experts stacked into 3-D tensors) and undoes that when it saves; the names and shapes here are the
saved ones (`revert_weight_conversion`, what `save_pretrained` writes), the canonical interchange.

Importing a transformers model class costs seconds and ~100 MB, more than converting a small model,
so the answer is cached on disk, keyed by transformers' version, the class and the config: a watch
loop or a batch converting many checkpoints of one run pays it once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from ..core.errors import UnknownArchitectureError
from ..files.locations import cache_root
from .hparams import hparams
from .registry import ArchitectureSpec

CACHE_FORMAT = 2        # 2: names and shapes as saved, not as loaded


@dataclass(frozen=True)
class ExpectedTensors:
    shapes: dict[str, tuple[int, ...]]
    tied: dict[str, str]          # alias -> tensor it is tied to (only when the config ties them)
    base_model_prefix: str
    optional: tuple[str, ...] = ()    # name suffixes a source may lack (transformers initializes them afresh)
    other_names: dict[str, str] = field(default_factory=dict)    # another name a source may use -> the name
    unloaded: tuple[str, ...] = ()    # patterns of names transformers does not load either (Tensors.unloaded)

    def not_loaded(self, name: str) -> bool:
        """Whether transformers leaves this source tensor out too (a multi-token-prediction head)."""
        return any(re.search(pattern, name) for pattern in self.unloaded)

    def name_for(self, name: str) -> str | None:
        """The architecture's name for a source's tensor name, when it is one (either spelling)."""
        return name if name in self.shapes else self.other_names.get(name)


def cache_dir() -> Path:
    return cache_root() / "expected-tensors"


def expected_tensors(spec: ArchitectureSpec, config: dict) -> ExpectedTensors:
    """From the spec's templates when it has them (no transformers needed); else its function; else
    transformers' own model, asked once per config and kept on disk."""
    if spec.tensors is not None and spec.tensors.describe(config):
        hp = hparams(config, spec.tie_default)
        shapes = spec.tensors.expand(hp)
        return ExpectedTensors(shapes, spec.tensors.tied_for(hp), spec.tensors.prefix, spec.tensors.optional,
                               spec.tensors.other_names(shapes), spec.tensors.unloaded_for(hp))
    if spec.expected_tensors is not None:
        return ExpectedTensors(spec.expected_tensors(config), dict(spec.tied_weights), "")
    return _cached(spec.hf_class, json.dumps(config, sort_keys=True))


@lru_cache(maxsize=8)
def _cached(hf_class: str, config_json: str) -> ExpectedTensors:
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{version('transformers')}\n{hf_class}\n{config_json}".encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        return ExpectedTensors({k: tuple(v) for k, v in data["shapes"].items()}, data["tied"], data["base_model_prefix"])
    except (OSError, ValueError, KeyError):
        pass
    found = _from_transformers(hf_class, json.loads(config_json))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(found)))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time
    return found


def model_class(hf_class: str, config: dict):
    """The transformers class for a config: its `architectures` entry when transformers has it."""
    import transformers

    names = [a for a in config.get("architectures") or [] if hasattr(transformers, a)]
    return getattr(transformers, names[0] if names else hf_class)


def hf_config(config: dict):
    """transformers' config object for a config dict."""
    from transformers import AutoConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoConfig.for_model(**config)
        except (ValueError, KeyError, TypeError) as exc:
            raise UnknownArchitectureError(f"transformers cannot build config: {exc}") from exc


def build_model(hf_class: str, config: dict, device: str = "cpu"):
    """A model of the config's class with no weights loaded (on "meta" it costs no memory)."""
    import torch

    built = hf_config(config)
    cls = model_class(hf_class, config)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return cls.from_config(built) if hasattr(cls, "from_config") else cls(built)


def _from_transformers(hf_class: str, config: dict) -> ExpectedTensors:
    from transformers.core_model_loading import revert_weight_conversion

    model = build_model(hf_class, config, "meta")
    saved = revert_weight_conversion(model, model.state_dict())
    shapes = {k: tuple(v.shape) for k, v in saved.items()}
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {}) if _ties(model.config) else {}
    tied = {alias: target for alias, target in tied.items() if alias in shapes and target in shapes}
    return ExpectedTensors(shapes, tied, getattr(model, "base_model_prefix", ""))


def _ties(hf_config) -> bool:
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    return bool(getattr(text, "tie_word_embeddings", False))
