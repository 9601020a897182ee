"""Reading a PEFT LoRA adapter folder: its settings, its A/B pairs and their scales, checked against its base.

PEFT saves each pair as `base_model.model.<module>.lora_A.weight` (rank x in) and `...lora_B.weight`
(out x rank), an embedding's as `lora_embedding_A`/`_B`, DoRA's magnitudes as `lora_magnitude_vector`,
tensors it trains whole (`modules_to_save`, biases with `bias="all"`) under the base's own names, and
with `save_embedding_layers` the adapted embeddings' own weights as `...base_layer.weight`.
A module's scale is alpha / rank (alpha / sqrt(rank) with rsLoRA), `rank_pattern` and `alpha_pattern`
overriding both per module, as PEFT's LoraLayer computes it.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

from ...architectures import spec_for
from ...architectures.expected import expected_tensors
from ...core.adapter import LoraAdapter, LoraModule
from ...core.bundle import ModelBundle, TensorRef
from ...core.errors import CorruptInputError, KeyMismatchError, ModelConversionError, quoted
from ..base import ReadOptions
from ..companions import find_companions, read_json
from . import CONFIG, WEIGHTS
from .experts import expert_modules, wrapped_parameter

PREFIX = "base_model.model."
COPY = ".base_layer.weight"     # the base's own tensor, saved beside its pair (save_embedding_layers)
PARTS = {".lora_A.weight": "a", ".lora_B.weight": "b", ".lora_embedding_A": "ea", ".lora_embedding_B": "eb",
         ".lora_magnitude_vector": "m"}


def read(path: Path, options: ReadOptions) -> ModelBundle:
    """The adapter with its base's config (from --base-model, or the local folder its settings name),
    checked against that base; without one, a note asks for --base-model (inspect still answers)."""
    base = _base(path, read_json(path / CONFIG), options.base_model)
    notes = []
    config, tokenizer, generation = {}, {}, None
    if base is not None:
        companions = find_companions(path, base)
        config, tokenizer, generation = companions.config, companions.tokenizer_files, companions.generation_config
    adapter, refs = read_adapter(path, options, config.get("model_type"))
    if base is not None:
        check_family(adapter, config.get("model_type"))
        check_against_base(list(adapter.modules), {**adapter.copies, **adapter.whole}, config, path)
    else:
        notes.append(f"the base model ({adapter.settings.get('base_model_name_or_path')!r}) is not a local folder: "
                     "pass --base-model DIR to convert this adapter")
    return ModelBundle(config, refs, path, "peft", tokenizer, generation, notes, adapter=replace(adapter, base=base))


def read_adapter(path: Path, options: ReadOptions = ReadOptions(),
                 model_type: str | None = None) -> tuple[LoraAdapter, dict[str, TensorRef]]:
    """The adapter's settings and pairs, and its tensors under the base's names. Pairs on fused expert
    parameters (experts.py) need the base's `model_type` to be placed; without it they are left out."""
    settings = read_json(path / CONFIG)
    kind = str(settings.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise ModelConversionError(f"a {kind} adapter; modelport reads LoRA adapters only", path / CONFIG)
    refs = {name.removeprefix(PREFIX): ref.renamed(name.removeprefix(PREFIX)) for name, ref in _weights(path, options).items()}
    if not refs:
        raise CorruptInputError("holds no tensors; not a LoRA adapter", path)
    modules, whole, copies = _pairs(refs, settings, path, model_type)
    return LoraAdapter(path, settings, tuple(modules), whole, copies=copies), refs


def _weights(path: Path, options: ReadOptions) -> dict[str, TensorRef]:
    file = next(path / w for w in WEIGHTS if (path / w).is_file())
    if file.suffix == ".safetensors":
        from ..hf.reader import safetensors_refs
        return safetensors_refs(file)
    from ..pytorch.pickle_io import load_pickle, pickle_refs
    obj = load_pickle(file, options.trust_remote_code)
    if not isinstance(obj, dict):
        raise CorruptInputError("expected a state dict", file)
    return pickle_refs(file, obj, (), options.trust_remote_code)


def _base(path: Path, settings: dict, given: Path | None) -> Path | None:
    """--base-model, else the folder adapter_config.json names when it is a local one."""
    return given if given is not None else named_base(path, settings)


def named_base(path: Path, settings: dict) -> Path | None:
    """The folder `base_model_name_or_path` names, when it is a local model folder (as written, or beside the adapter)."""
    named = settings.get("base_model_name_or_path")
    if isinstance(named, str) and named:
        for candidate in (Path(named).expanduser(), path / named):
            if (candidate / "config.json").is_file():
                return candidate
    return None


def check_family(adapter: LoraAdapter, model_type: str | None) -> None:
    """An adapter whose named base is a local model of another family is refused by name, before its targets."""
    named = named_base(adapter.path, adapter.settings)
    if named is None:
        return
    made_for = read_json(named / "config.json").get("model_type")
    if made_for and model_type and made_for != model_type:
        raise KeyMismatchError(f"an adapter for another family: made for a {made_for} model ({named}), not this "
                               f"{model_type} one", adapter.path)


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: the first key matching the module name's end (a regex)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def module_scale(settings: dict, module: str, rank: int) -> float:
    alpha = pattern_value(settings.get("alpha_pattern"), module, settings.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank


def _pairs(refs: dict[str, TensorRef], settings: dict, path: Path,
           model_type: str | None) -> tuple[list[LoraModule], dict[str, TensorRef], dict[str, TensorRef]]:
    parts: dict[str, dict[str, TensorRef]] = {}
    whole: dict[str, TensorRef] = {}
    copies: dict[str, TensorRef] = {}
    for name, ref in refs.items():
        suffix = next((s for s in PARTS if name.endswith(s)), None)
        if name.endswith(COPY):
            copies[name[:-len(COPY)] + ".weight"] = ref
        elif suffix is None:
            whole[name] = ref
        else:
            parts.setdefault(name[:-len(suffix)], {})[PARTS[suffix]] = ref
    modules = []
    for module, got in parts.items():
        embedding = "ea" in got or "eb" in got
        a, b = (got.get("ea"), got.get("eb")) if embedding else (got.get("a"), got.get("b"))
        if a is None or b is None:
            raise CorruptInputError(f"{quoted(module)} has lora_{'A' if a else 'B'} but no lora_{'B' if a else 'A'}", path)
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
            raise CorruptInputError(f"{quoted(module)}: rank mismatch between lora_A {a.shape} and lora_B {b.shape}", path)
        wrapped = wrapped_parameter(module, settings)
        if wrapped is not None:
            rank = pattern_value(settings.get("rank_pattern"), wrapped[0], settings.get("r", a.shape[0]))
            if model_type is not None:
                modules += expert_modules(*wrapped, a, b, rank, module_scale(settings, wrapped[0], rank), model_type,
                                          path)
            continue
        rank = pattern_value(settings.get("rank_pattern"), module, settings.get("r", a.shape[0]))
        if rank != a.shape[0]:
            raise CorruptInputError(f"{quoted(module)}: rank mismatch: its tensors have rank {a.shape[0]}, "
                                    f"{CONFIG} says {rank}", path)
        modules.append(LoraModule(f"{module}.weight", a, b, module_scale(settings, module, rank), embedding,
                                  bool(settings.get("fan_in_fan_out")) and not embedding, got.get("m")))
    if not parts:
        raise CorruptInputError("holds no lora_A/lora_B pairs; not a LoRA adapter", path)
    return modules, whole, copies


def check_against_base(modules: list[LoraModule], whole: dict[str, TensorRef], config: dict, path: Path) -> None:
    """Every pair's target is a tensor of the base, of the shape its product has; a tied alias is refused
    (changing it would change the tensor it is tied to)."""
    expected = expected_tensors(spec_for(config), config)
    missing, wrong = [], []
    for module in modules:
        shape = expected.shapes.get(module.target)
        if module.target in expected.tied:
            raise ModelConversionError(f"adapts {module.target}, which this base ties to "
                                       f"{expected.tied[module.target]}; changing one would change both", path)
        if shape is None:
            missing.append(module.target)
        elif tuple(shape) != module.delta_shape:
            wrong.append(f"{module.target} {module.delta_shape} vs {tuple(shape)}")
    for name, ref in whole.items():
        shape = expected.shapes.get(name)
        if shape is None:
            missing.append(name)
        elif tuple(shape) != ref.shape:
            wrong.append(f"{name} {ref.shape} vs {tuple(shape)}")
    model = config.get("model_type")
    if missing and len(missing) >= len(modules) + len(whole):
        raise KeyMismatchError(f"none of its {len(missing)} target(s) ({', '.join(missing[:3])}) is a tensor of the "
                               f"{model} base: an adapter for another model?", path)
    if missing:
        raise KeyMismatchError(f"{len(missing)} target(s) not in the {model} base: {', '.join(missing[:5])}", path)
    if wrong:
        raise KeyMismatchError(f"{len(wrong)} target(s) differ in shape from the {model} base (adapter, base): "
                               f"{'; '.join(wrong[:3])}", path)
