"""What a family needs to become GGUF, as data: llama.cpp's arch, tensor names and rules, metadata keys.

Tensor names come from gguf-py's TensorNameMap for the arch (plus `names` for what it lacks); HF
per-expert tensors (`...experts.{E}...`) are stacked, expert-major, into llama.cpp's 3-D `*_exps`
tensors, and so are the numbered tensors a mapping's `stacks` names (Gemma 3n's AltUp projections).
Values go through the rules that match them (rules.py: Q/K head permutation for llama.cpp's
interleaved rope, GPT-2's Conv1D transposed, Gemma's norms stored as 1 + w), each of which knows its
inverse, so reading a GGUF back runs the same data backwards. Metadata is a table of keys
(full key names, `{arch}` standing for llama.cpp's architecture name) whose values are expressions
over the config (hparams.py); a function may add what a table cannot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .rules import AddOffset, Chain, PermuteHeads, Rule, Take, Transpose

if TYPE_CHECKING:
    import numpy as np
    from gguf import GGUFWriter

    from .hparams import HParams

EXPERT = re.compile(r"\.experts\.(\d+)\.")


@dataclass(frozen=True)
class Key:
    """One metadata value: an expression over the config, its GGUF type, and when it is written. A value
    computed from the config (a per-layer list) says how to read it back: `inverse` holds (config key,
    expression over the stored `value`, the config rebuilt so far and the file's tensor names, `tensors`) pairs."""

    value: Any
    type: str = "u32"              # u32, i32, f32, bool, str, or array (of what the list holds)
    when: str | None = None
    inverse: tuple[tuple[str, str], ...] = ()


ROPE_SCALING_KEYS: dict[str, Key] = {
    "{arch}.rope.scaling.type": Key("rope_type", "str", when="rope_type in ('linear', 'yarn', 'longrope')"),
    "{arch}.rope.scaling.factor": Key("rope_factor", "f32", when="rope_type in ('linear', 'yarn') and rope_factor"),
    "{arch}.rope.scaling.original_context_length": Key("rope_orig_ctx", when="rope_type == 'yarn'"),
    **{f"{{arch}}.rope.scaling.yarn_{key}": Key(f"rope_{key}", "f32", when=f"rope_type == 'yarn' and rope_{key} is not None")
       for key in ("ext_factor", "attn_factor", "beta_fast", "beta_slow")},
}
CORE_KEYS: dict[str, Key] = {
    "{arch}.context_length": Key("ctx"), "{arch}.embedding_length": Key("hidden"), "{arch}.block_count": Key("layers"),
    "{arch}.feed_forward_length": Key("ffn"), "{arch}.attention.head_count": Key("heads"),
    "{arch}.vocab_size": Key("vocab"),
}
DECODER_KEYS: dict[str, Key] = {     # every RMSNorm + rotary decoder (llama, mistral, qwen2/3, phi3, gemma)
    **CORE_KEYS,
    "{arch}.attention.head_count_kv": Key("kv_heads"),
    "{arch}.rope.freq_base": Key("rope_theta", "f32"),
    "{arch}.attention.layer_norm_rms_epsilon": Key("rms_eps if rms_eps is not None else 1e-6", "f32"),
    "{arch}.rope.dimension_count": Key("rot_dim"),
    "{arch}.attention.key_length": Key("head_dim", when="head_dim != hidden // heads"),
    "{arch}.attention.value_length": Key("head_dim", when="head_dim != hidden // heads"),
    **ROPE_SCALING_KEYS,
}
TEXT_KEYS: dict[str, Key] = {       # what llama.cpp's converter writes for any text model the config describes
    "{arch}.block_count": Key("layers"),
    "{arch}.context_length": Key("ctx"),
    "{arch}.embedding_length": Key("hidden"),
    "{arch}.feed_forward_length": Key("ffn"),
    "{arch}.attention.head_count": Key("heads"),
    "{arch}.attention.head_count_kv": Key("kv_heads"),
    **ROPE_SCALING_KEYS,
    "{arch}.rope.freq_base": Key("rope_theta", "f32"),
    "{arch}.rope.freq_base_swa": Key("rope_theta_swa", "f32", when="rope_theta_swa is not None"),
    "{arch}.attention.layer_norm_rms_epsilon": Key("rms_eps", "f32", when="rms_eps is not None"),
    "{arch}.attention.layer_norm_epsilon": Key("ln_eps", "f32", when="ln_eps is not None"),
    "{arch}.expert_count": Key("experts", when="experts"),
    "{arch}.expert_used_count": Key("experts_used", when="experts_used"),
    "{arch}.attention.key_length": Key("head_dim", when="get('head_dim') is not None"),
    "{arch}.attention.value_length": Key("head_dim", when="get('head_dim') is not None"),
    "{arch}.rope.dimension_count": Key("rot_dim"),
    "{arch}.vocab_size": Key("vocab"),
}
MetadataFn = Callable[["GGUFWriter", "HParams"], None]


@dataclass(frozen=True)
class Part:
    """One GGUF tensor that is part of a fused HF tensor (a gate_up split into gate and up): which part,
    cut how (see rules.Take; `sizes` and `groups` are expressions over the config), and the rules only
    this part goes through after the cut."""

    name: str                   # GGUF name, `{L}` for the layer
    index: int
    parts: int
    axis: int = -1
    interleaved: bool = False
    sizes: tuple[str, ...] = ()
    groups: str | None = None
    rules: tuple[Rule, ...] = ()

    def take(self, hp: "HParams") -> Take:
        return Take((), self.index, self.parts, self.axis, self.interleaved,
                    tuple(int(hp.eval(size)) for size in self.sizes),
                    int(hp.eval(self.groups)) if self.groups else 0)


def split(*names: str, axis: int = -1, interleaved: bool = False) -> tuple[Part, ...]:
    """A fused HF tensor cut into len(names) equal parts along `axis`, the i-th part becoming names[i]."""
    return tuple(Part(name, i, len(names), axis, interleaved) for i, name in enumerate(names))


@dataclass(frozen=True)
class Target:
    """Where one HF tensor (or one part of it, when `chain` takes a part) goes: a GGUF tensor, or
    entry `expert` of a stacked one (an expert, or one of a `stacks` tensor's numbered parts)."""

    name: str
    expert: int | None
    chain: Chain


@dataclass(frozen=True, eq=False)        # compared (and cached) by identity: each family has one
class GGUFMapping:
    arch: str                                   # gguf.MODEL_ARCH member name, e.g. "LLAMA"
    metadata: Mapping[str, Key] | MetadataFn = field(default_factory=lambda: DECODER_KEYS)
    rules: tuple[Rule, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)   # HF name template -> GGUF name, beyond TensorNameMap
    # numbered HF tensors ({E} the number) stacked in order into one 3-D GGUF tensor, as experts are:
    # HF name template -> GGUF name; the reader takes entry {E} back out
    stacks: Mapping[str, str] = field(default_factory=dict)
    skip: tuple[str, ...] = ()                  # HF name suffixes llama.cpp has no use for
    strip_prefix: str = ""                      # removed before TensorNameMap looks a name up (as llama.cpp's converter does)
    requires: Mapping[str, str] = field(default_factory=dict)   # expression -> what llama.cpp assumes, when it must hold
    # how far llama.cpp's f32 logits may be from transformers' on the tiny model: above 1e-3 only where its
    # graph computes the family in a way of its own, which the spec's docstring and `note` name
    tolerance: float = 1e-3
    # a GGML type whose precision llama.cpp computes part of the family at (Gemma 3n's GELU reads an F16
    # table): verify counts that type's relative error as noise between llama.cpp and transformers
    runtime_type: str = ""
    splits: Mapping[str, tuple[Part, ...]] = field(default_factory=dict)   # HF name template -> its GGUF parts
    extra_tensors: Callable[["HParams"], dict[str, "np.ndarray"]] | None = None
    # HF tensors of one value per layer that llama.cpp reads as a metadata array, a value a layer (Apertus'
    # xIELU parameters): HF name template ({L}) -> full metadata key; the reader makes the tensors again
    layer_values: Mapping[str, str] = field(default_factory=dict)
    # shorthands, kept for plugins: each becomes a rule
    permute_qk: bool = False
    transpose: tuple[str, ...] = ()
    norm_offset: float = 0.0

    def all_rules(self) -> tuple[Rule, ...]:
        made: list[Rule] = []
        if self.permute_qk:
            made += [PermuteHeads(("q_proj.weight", "q_proj.bias"), "heads"),
                     PermuteHeads(("k_proj.weight", "k_proj.bias"), "kv_heads")]
        if self.transpose:
            made.append(Transpose(self.transpose))
        if self.norm_offset:
            made.append(AddOffset(("norm.weight",), self.norm_offset))
        return (*self.rules, *made)

    def chain(self, hf_name: str) -> Chain:
        return _chain(self, hf_name)

    def targets(self, hf_name: str, hp: "HParams") -> list[Target]:
        """Where an HF tensor goes: one target, one per part of a split tensor, or none (no GGUF name)."""
        for template, parts in self.splits.items():
            found = re.fullmatch(_pattern(template), hf_name)
            if found:
                chain = self.chain(hf_name)
                return [Target(part.name.format(**found.groupdict()), None,
                               Chain((part.take(hp), *part.rules, *chain.rules)).bound(hp)) for part in parts]
        found = self.target(hf_name, hp.n_layer)
        return [Target(found[0], found[1], self.chain(hf_name).bound(hp))] if found else []

    def target(self, hf_name: str, n_layer: int) -> tuple[str, int | None] | None:
        """(GGUF name, expert index when stacked) of an HF tensor; None when llama.cpp has no name for it."""
        for template, gguf_name in self.stacks.items():
            found = re.fullmatch(_pattern(template), hf_name)
            if found:
                return gguf_name.format(**found.groupdict()), int(found["E"])
        match = EXPERT.search(hf_name)
        merged = EXPERT.sub(".experts.", hf_name) if match else hf_name
        name = self._explicit(merged) or _names(self.arch, n_layer).get_name(merged.removeprefix(self.strip_prefix),
                                                                            try_suffixes=(".weight", ".bias"))
        return (name, int(match.group(1)) if match else None) if name else None

    def _explicit(self, hf_name: str) -> str | None:
        for template, gguf_name in self.names.items():
            found = re.fullmatch(_pattern(template), hf_name)
            if found:
                return gguf_name.format(**found.groupdict())
        return None

    def layer_value(self, hf_name: str) -> tuple[str, int] | None:
        """(metadata key, layer) when `hf_name` is one layer's value of a per-layer metadata array."""
        for template, key in self.layer_values.items():
            found = re.fullmatch(_pattern(template), hf_name)
            if found:
                return key, int(found["L"])
        return None

    def unmet(self, hp: "HParams") -> list[str]:
        """What llama.cpp hard-codes for this arch that the config does otherwise (it would compute another function)."""
        return [why for condition, why in self.requires.items() if not hp.eval(condition)]

    def metadata_values(self, hp: "HParams") -> dict[str, Any]:
        """The metadata this config gets (empty when a function writes it: plugins)."""
        import gguf
        return {} if callable(self.metadata) else key_values(
            self.metadata, hp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[self.arch]])

    def write_metadata(self, writer: "GGUFWriter", hp: "HParams") -> None:
        if callable(self.metadata):
            self.metadata(writer, hp)
        else:
            write_keys(writer, self.metadata, hp)


@lru_cache(maxsize=256)
def _pattern(template: str) -> str:
    return re.escape(template).replace(r"\{L\}", r"(?P<L>\d+)").replace(r"\{E\}", r"(?P<E>\d+)")


@lru_cache(maxsize=256)
def _chain(mapping: GGUFMapping, hf_name: str) -> Chain:
    return Chain(tuple(r for r in mapping.all_rules() if r.matches(hf_name)))


@lru_cache(maxsize=16)
def _names(arch: str, n_layer: int):
    import gguf
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], n_layer)


def _entries(keys: Mapping[str, Key], hp: "HParams", arch: str) -> list[tuple[str, Any, str]]:
    """(key, value, type) of a keys table's entries whose condition holds and whose value is not None,
    in the table's order (`{arch}` in a key is llama.cpp's name of the architecture)."""
    casts = {"u32": int, "i32": int, "f32": float, "bool": bool, "str": str, "array": list}
    entries = []
    for key, spec in keys.items():
        if spec.when is not None and not hp.eval(spec.when):
            continue
        value = hp.eval(spec.value)
        if value is not None:
            entries.append((key.format(arch=arch), casts[spec.type](value), spec.type))
    return entries


def key_values(keys: Mapping[str, Key], hp: "HParams", arch: str) -> dict[str, Any]:
    return {key: value for key, value, _ in _entries(keys, hp, arch)}


def write_keys(writer: "GGUFWriter", keys: Mapping[str, Key], hp: "HParams") -> None:
    from gguf import GGUFValueType as V

    types = {"u32": V.UINT32, "i32": V.INT32, "f32": V.FLOAT32, "bool": V.BOOL, "str": V.STRING}
    for key, value, kind in _entries(keys, hp, writer.arch):
        if kind == "array":
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, types[kind])


def core_metadata(w: "GGUFWriter", hp: "HParams") -> None:
    """The keys every model has (for metadata functions; plugins build on it)."""
    write_keys(w, CORE_KEYS, hp)


def decoder_metadata(w: "GGUFWriter", hp: "HParams") -> None:
    write_keys(w, DECODER_KEYS, hp)


def llama3_rope_factors(hp: "HParams") -> dict[str, "np.ndarray"]:
    """Llama 3.1's frequency-dependent rope scaling, which llama.cpp reads as `rope_freqs.weight`."""
    import math

    import numpy as np
    rope = hp.rope
    if rope.get("rope_type") != "llama3":
        return {}
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float32) / hp.head_dim))
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return {"rope_freqs.weight": np.array(factors, dtype=np.float32)}
