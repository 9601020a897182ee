"""The one registry of model families, extended by built-in specs (families/) and plugins alike.

A spec is data first: which HF `model_type`s it covers, its tensors as templates, how each format
takes it, and a tiny config to test it by. Tests and docs iterate the registry, so a family is one file.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..core.errors import UnknownArchitectureError, UsageError
from .expressions import MissingConfigValue, evaluate

if TYPE_CHECKING:
    from .gguf_mapping import GGUFMapping
    from .tensors import Tensors

PLUGIN_DOC = "docs/architectures.md"
ENTRY_POINT_GROUP = "modelport.architectures"
PLUGIN_PATH_ENV = "MODELPORT_PLUGIN_PATH"       # --plugin-path sets it, so child processes see the same plugins
log = logging.getLogger("modelport")


@dataclass(frozen=True)
class Variant:
    """A form of a family its config selects that llama.cpp runs as an arch of its own (Nemotron-H with
    MoE layers is NEMOTRON_H_MOE): the same HF model type and tensor templates, another GGUF mapping.
    `when` is an expression over the config; `tiny` is what the tests change in the family's tiny config
    to build one, and `name` the sample's suffix ("nemotron_h-moe")."""
    name: str
    when: str
    gguf: "GGUFMapping"
    tiny: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ArchitectureSpec:
    """What modelport needs to know about one model family.

    `tensors` states the family's tensors as data (tensors.py: name templates, shape expressions), so
    knowing them needs no transformers; `tie_default` is whether the family ties its embeddings when
    the config does not say. Without `tensors`, `expected_tensors(config)` may state them as a function
    (with `tied_weights`), or else they are asked of transformers (the model built on the meta device)
    and cached. `hf_class` is the transformers class that runs the family when the config's
    `architectures` names none transformers has. `gguf` says how it becomes GGUF (None: it does not),
    `onnx` which ONNX export family it is (formats/onnx/families.py; None: no ONNX), and `tiny` is a
    small config the tests build a random model from (every family is tested from it), with the kind of
    tokenizer to train for it.
    """

    model_type: str
    hf_class: str = "AutoModelForCausalLM"
    aliases: tuple[str, ...] = ()
    tensors: "Tensors | None" = None
    tie_default: bool = False
    expected_tensors: Callable[[dict], dict[str, tuple[int, ...]]] | None = None
    tied_weights: dict[str, str] = field(default_factory=dict)
    gguf: "GGUFMapping | None" = None
    onnx: str | None = None
    tiny: dict = field(default_factory=dict)
    tiny_tokenizer: str = "bpe"                  # samples.train_tokenizer's kind for test models
    tiny_specials: tuple[str, ...] = ()          # special tokens the family's real tokenizer always has
    note: str = ""                               # what the docs say of it, e.g. why it has no GGUF
    no_onnx: str = ""                            # why it has no ONNX export, when torch.onnx cannot export it
    recurrent: str = ""                          # what in its layers carries state along the sequence (state-space
                                                 # scans, short convolutions): verify runs it whole, not layer-major
    not_layer_major: str = ""                    # any other reason verify must run it whole: what its decoder
                                                 # needs beyond the input embeddings and one module's weights
    variants: tuple[Variant, ...] = ()           # forms the config selects that become GGUF another way
    # canonical config key -> an expression over the config (and hparams' names) giving its value where the
    # config spells it another way (a released remote-code config); used when the key is absent or null
    config_fallbacks: dict[str, str] = field(default_factory=dict)

    def canonical_config(self, config: dict) -> dict:
        """The config with every key of `config_fallbacks` it lacks computed from its other spelling (the
        config itself when it lacks none). A fallback naming a value the config does not give either is a
        gap of the input (MissingConfigValue, one line under config_gaps), named as the other spelling."""
        lacking = [key for key in self.config_fallbacks if config.get(key) is None]
        if not lacking:
            return config
        from .hparams import variables
        out = dict(config)
        for key in lacking:
            text = self.config_fallbacks[key]
            try:
                out[key] = evaluate(text, variables(out, self.tie_default))
            except MissingConfigValue as exc:
                raise MissingConfigValue(exc.name, f"{key} = {text}") from None
        return out

    def variant(self, name: str) -> "ArchitectureSpec":
        """The family as its variant `name`: that GGUF mapping, and the tiny config with its changes."""
        chosen = next(v for v in self.variants if v.name == name)
        return replace(self, gguf=chosen.gguf, tiny={**self.tiny, **chosen.tiny}, variants=())

    def for_config(self, config: dict) -> "ArchitectureSpec":
        """The spec this config is converted by: its first variant whose condition holds, else the family."""
        from .hparams import hparams
        hp = hparams(config, self.tie_default)
        return next((self.variant(v.name) for v in self.variants if hp.eval(v.when)), self)

    def with_variants(self) -> list["ArchitectureSpec"]:
        """The family and each of its variants (what a GGUF of any of its arches may be read back as)."""
        return [self, *(self.variant(v.name) for v in self.variants)]


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register_architecture(spec: ArchitectureSpec | Callable[[], ArchitectureSpec] | None = None) -> Any:
    """Add (or replace) a family. Three spellings, one meaning:

        register_architecture(ArchitectureSpec(...))      # returns the spec
        @register_architecture                            # on a function returning the spec
        @register_architecture()                          # the same, with parentheses
    """
    if spec is None:
        return register_architecture
    if not isinstance(spec, ArchitectureSpec):
        made = spec()
        if not isinstance(made, ArchitectureSpec):
            raise TypeError(f"{getattr(spec, '__name__', spec)} must return an ArchitectureSpec, not {type(made).__name__}")
        spec = made
    for name in (spec.model_type, *spec.aliases):
        _REGISTRY[name] = spec
    return spec


_plugins_loaded: set[str] = set()


def load_plugins() -> None:
    """Register the specs of installed plugins (entry point group `modelport.architectures`) and of
    every `*.py` in the folders of $MODELPORT_PLUGIN_PATH; each source is loaded once per process."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"ep:{ep.value}"
        if key not in _plugins_loaded:
            _plugins_loaded.add(key)
            loaded = ep.load()
            if isinstance(loaded, ArchitectureSpec) or callable(loaded):   # a module registers on import
                register_architecture(loaded)
    for folder in filter(None, os.environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            key = f"file:{path.resolve()}"
            if key not in _plugins_loaded:
                _plugins_loaded.add(key)
                _import_file(path)


def _import_file(path: Path) -> None:
    """Importing a plugin file runs its `register_architecture` calls."""
    name = f"modelport_plugin_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a plugin's own bug: name the file
        raise UsageError(f"plugin failed to load: {type(exc).__name__}: {exc}", path) from exc
    log.debug("loaded plugin %s", path)


def add_plugin_path(folder: str | Path) -> None:
    """--plugin-path DIR: load DIR's plugins now, and let child processes find them too."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise UsageError("--plugin-path: no such folder", folder)
    paths = [p for p in os.environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep) if p]
    os.environ[PLUGIN_PATH_ENV] = os.pathsep.join([*paths, str(folder)])
    load_plugins()


def supported_model_types() -> list[str]:
    load_plugins()
    return sorted({spec.model_type for spec in _REGISTRY.values()})


def registered() -> list[ArchitectureSpec]:
    """Every family's spec once, built-in and plugin, by model type."""
    load_plugins()
    return sorted({id(s): s for s in _REGISTRY.values()}.values(), key=lambda s: s.model_type)


def canonical_config(config: dict) -> dict:
    """The config as its family's spec spells it (ArchitectureSpec.canonical_config): what every reader does
    to a config.json it finds. A family modelport does not know leaves it as it is (spec_for says so)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return config
    if model_type not in _REGISTRY:
        load_plugins()
    spec = _REGISTRY.get(model_type)
    return spec.canonical_config(config) if spec is not None else config


def spec_for(config: dict, source: object = None) -> ArchitectureSpec:
    model_type = config.get("model_type")
    if model_type not in _REGISTRY:
        load_plugins()
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise UnknownArchitectureError(
        f"unknown architecture {model_type!r}; supported: {', '.join(supported_model_types())}. "
        f"To add one, register an ArchitectureSpec (see {PLUGIN_DOC})",
        source,
    )
