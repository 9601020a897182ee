"""An HF config's values, checked before anything is sized or built from them.

The config is what every reader trusts to size things: the layer count expands name maps and
builds models, the heads divide rows, epsilons and rope settings are written into GGUF metadata.
A string where a count belongs, 2^31 layers, a NaN epsilon or an unknown rope type has to stop
here, as one line naming the file and the key, and not as a hang or an internal error deep in a
writer. Bounds are what the formats can hold (GGUF stores dimensions as uint32), not guesses about
model sizes; the layer count is also checked against the tensors a checkpoint actually has.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from .errors import CorruptInputError

U32 = 2**32 - 1
# counts and sizes: a positive integer wherever the key appears
DIMENSIONS = (
    "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
    "intermediate_size", "vocab_size", "max_position_embeddings", "n_positions",
)
# of those, the ones a config may give per layer instead, as a list (Gemma 3n's intermediate_size)
PER_LAYER_DIMENSIONS = ("intermediate_size",)
# the same, but null means "not set" (a default applies)
OPTIONAL_DIMENSIONS = (
    "num_key_value_heads", "head_dim", "n_inner", "n_ctx", "original_max_position_embeddings",
    "moe_intermediate_size", "shared_expert_intermediate_size", "type_vocab_size", "query_pre_attn_scalar",
)
# null or 0 mean "off": expert counts are 0 in a dense config of an MoE family (granite-4.0-h-micro's)
SWITCHABLE = ("sliding_window", "num_local_experts", "num_experts", "num_experts_per_tok", "n_routed_experts",
              "n_shared_experts")
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
FLAGS = ("tie_word_embeddings", "attention_bias", "mlp_bias")
POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "rope_theta")
OPTIONAL_POSITIVE_FLOATS = ("attn_logit_softcapping", "final_logit_softcapping")
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e5m2")
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def check_config(config: Mapping[str, Any], path: str | Path | None, names: Mapping[str, str] | None = None) -> None:
    """Raise CorruptInputError naming `path` and the key for the first value no model can have.

    `names` maps a config key to what the user's file calls it (a config rebuilt from GGUF metadata
    reports the GGUF key)."""
    def fail(key: str, message: str) -> CorruptInputError:
        shown = (names or {}).get(key, key)
        return CorruptInputError(f"{shown}: {message}", path)

    for key in DIMENSIONS:
        if key in config:
            value = config[key]
            for item in value if key in PER_LAYER_DIMENSIONS and isinstance(value, list) else [value]:
                _count(item, key, fail, nullable=False)
    for key in OPTIONAL_DIMENSIONS:
        if key in config:
            _count(config[key], key, fail, nullable=True)
    for key in SWITCHABLE:
        value = config.get(key)
        if value is not None and (not _is_int(value) or not 0 <= value <= U32):
            raise fail(key, f"{value!r} is not a size (a non-negative integer; 0 or null for none)")
    for key in TOKEN_IDS:
        value = config.get(key)
        for item in (value if isinstance(value, list) else [value]):
            if item is not None and (not _is_int(item) or item < 0 or item > U32):
                raise fail(key, f"{item!r} is not a token id (a non-negative integer)")
    for key in FLAGS:
        if key in config and not isinstance(config[key], bool):
            raise fail(key, f"{config[key]!r} is not true or false")
    for key in POSITIVE_FLOATS:
        if key in config:
            _positive(config[key], key, fail, nullable=False)
    for key in OPTIONAL_POSITIVE_FLOATS:
        if key in config:
            _positive(config[key], key, fail, nullable=True)
    if "partial_rotary_factor" in config:
        value = config["partial_rotary_factor"]
        if not _is_number(value) or not 0 < value <= 1:
            raise fail("partial_rotary_factor", f"{value!r} is not a fraction in (0, 1]")
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or value.removeprefix("torch.") not in DTYPE_NAMES):
            raise fail(key, f"{value!r} is not a dtype (one of {', '.join(DTYPE_NAMES)})")
    _rope(config, fail)
    _heads(config, fail)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _count(value: Any, key: str, fail, nullable: bool) -> None:
    if value is None and nullable:
        return
    if not _is_int(value) or not 0 < value <= U32:
        raise fail(key, f"{value!r} is not a positive integer (at most {U32})")


def _positive(value: Any, key: str, fail, nullable: bool) -> None:
    if value is None and nullable:
        return
    if not _is_number(value) or value <= 0:
        raise fail(key, f"{value!r} is not a positive finite number")


def _rope(config: Mapping[str, Any], fail) -> None:
    for key in ("rope_scaling", "rope_parameters"):
        block = config.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise fail(key, f"{block!r} is not an object")
        kind = block.get("rope_type", block.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise fail(f"{key}.rope_type", f"{kind!r} is not a rope type modelport knows ({', '.join(ROPE_TYPES)})")
        if "rope_theta" in block:
            _positive(block["rope_theta"], f"{key}.rope_theta", fail, nullable=False)
        if "factor" in block:
            _positive(block["factor"], f"{key}.factor", fail, nullable=True)


def _heads(config: Mapping[str, Any], fail) -> None:
    hidden = config.get("hidden_size", config.get("n_embd"))
    heads = config.get("num_attention_heads", config.get("n_head"))
    kv_heads = config.get("num_key_value_heads")
    if hidden and heads and config.get("head_dim") is None and hidden % heads:
        raise fail("hidden_size", f"{hidden} is not divisible by num_attention_heads {heads} (and no head_dim is given)")
    if heads and kv_heads and heads % kv_heads:
        raise fail("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads}")


def check_layers(config: Mapping[str, Any], tensor_count: int, path: str | Path | None) -> None:
    """The layer count against the tensors there are: every layer holds at least one tensor, so a
    larger count is a lie, and the bound keeps name templates and model builders from expanding it."""
    for key in ("num_hidden_layers", "n_layer"):
        layers = config.get(key)
        if _is_int(layers) and layers > tensor_count:
            raise CorruptInputError(f"{key}: {layers} layers, but the checkpoint has only {tensor_count} tensors",
                                    path)
