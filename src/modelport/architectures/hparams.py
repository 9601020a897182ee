"""One view of a config's hyper-parameters, whatever names and transformers version wrote it.

Families spell the same thing differently (`hidden_size`, `n_embd`, `d_model`; `num_experts`,
`num_local_experts`, `n_routed_experts`), and transformers 5 writes `rope_parameters` where older
versions wrote `rope_theta` + `rope_scaling`. VARIABLES names each quantity once, with the config
keys it is read from (the first present wins) and a default; specs' expressions use these names,
and every config key besides (`hp.names`). The first key of each entry is the one a config rebuilt
from GGUF metadata gets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .expressions import ExpressionError, evaluate

# name -> (config keys, default expression over names defined above it)
VARIABLES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "hidden": (("hidden_size", "n_embd", "d_model"), None),
    "layers": (("num_hidden_layers", "n_layer", "num_layers"), "len(layers_block_type)"),   # Nemotron-H: per-layer kinds only
    "heads": (("num_attention_heads", "n_head", "num_heads"), None),
    "kv_heads": (("num_key_value_heads", "num_kv_heads"), "heads"),
    "head_dim": (("head_dim",), "hidden // heads"),
    "ffn": (("intermediate_size", "n_inner", "ffn_hidden_size"), "4 * hidden"),
    "vocab": (("vocab_size",), None),
    "ctx": (("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "model_max_length"), "2048"),
    "rms_eps": (("rms_norm_eps", "norm_eps"), None),
    "ln_eps": (("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"), None),
    "partial_rotary": (("partial_rotary_factor", "rotary_pct"), "rope_partial_rotary"),
    "experts": (("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"), "0"),
    "experts_used": (("num_experts_per_tok", "moe_k", "num_experts_per_token"), "0"),
    "expert_ffn": (("moe_intermediate_size",), "ffn"),
    "shared_experts": (("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), "0"),
    "tie": (("tie_word_embeddings",), "False"),
}


# YaRN's tuning, as llama.cpp's converter reads it from the rope parameters
YARN = {"rope_ext_factor": ("extrapolation_factor",), "rope_attn_factor": ("attention_factor", "attn_factor"),
        "rope_beta_fast": ("beta_fast",), "rope_beta_slow": ("beta_slow",), "rope_mscale_all_dim": ("mscale_all_dim",)}


def first(config: dict, *names: str, default=None):
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def rope_settings(config: dict) -> tuple[float, dict]:
    params = dict(config.get("rope_parameters") or {})
    if params and all(isinstance(v, dict) for v in params.values()):      # per layer type (Gemma 3): the global one
        params = dict(params.get("full_attention") or next(iter(params.values())))
    scaling = dict(config.get("rope_scaling") or {})
    theta = first(params, "rope_theta") or first(config, "rope_theta", default=10000.0)
    merged = {**scaling, **{k: v for k, v in params.items() if k != "rope_theta"}}
    kind = merged.get("rope_type") or merged.get("type") or "default"
    return float(theta), ({} if kind == "default" else {**merged, "rope_type": kind})


@dataclass(frozen=True)
class HParams:
    n_ctx: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    rms_eps: float | None
    ln_eps: float | None
    rope: dict = field(default_factory=dict)     # rope_type, factor, ... (empty when unscaled)
    raw: dict = field(default_factory=dict)
    names: dict[str, Any] = field(default_factory=dict, repr=False)   # every config key and VARIABLE

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)

    def __getitem__(self, name: str) -> Any:
        return self.names[name]

    def eval(self, expression: Any, **extra: Any) -> Any:
        """A spec expression's value for this config (with e.g. the layer index bound as L)."""
        return evaluate(expression, {**self.names, **extra} if extra else self.names)


def variables(config: dict, tie_default: bool = False) -> dict[str, Any]:
    names: dict[str, Any] = dict(config)
    params = config.get("rope_parameters")     # transformers 5 moves partial_rotary_factor in here
    names["rope_partial_rotary"] = params.get("partial_rotary_factor", 1.0) if isinstance(params, dict) else 1.0
    for name, (keys, default) in VARIABLES.items():
        value = first(config, *keys)
        if value is None and name == "tie":
            value = tie_default
        if value is None and default:
            try:
                value = evaluate(default, names)
            except (TypeError, ZeroDivisionError, ExpressionError):    # a quantity this kind of model lacks
                value = None
        names[name] = value
    theta, rope = rope_settings(config)
    names["rope_theta"] = theta
    names["rope"] = rope
    names["rope_type"] = rope.get("rope_type")
    names["rope_factor"] = rope.get("factor")
    names["rope_orig_ctx"] = rope.get("original_max_position_embeddings")
    for name, keys in YARN.items():
        names[name] = first(rope, *keys)
    sliding = (config.get("rope_parameters") or {}).get("sliding_attention")
    names["rope_theta_swa"] = (sliding.get("rope_theta") if isinstance(sliding, dict)
                               else config.get("rope_local_base_freq"))
    if isinstance(names["head_dim"], int):
        names["rot_dim"] = int(names["head_dim"] * names["partial_rotary"])
    return names


def hparams(config: dict, tie_default: bool = False) -> HParams:
    names = variables(config, tie_default)
    return HParams(
        n_ctx=names["ctx"], n_embd=names["hidden"], n_layer=names["layers"], n_ff=names["ffn"],
        n_head=names["heads"], n_head_kv=names["kv_heads"], head_dim=names["head_dim"], vocab_size=names["vocab"],
        rope_theta=names["rope_theta"], rms_eps=names["rms_eps"], ln_eps=names["ln_eps"], rope=names["rope"],
        raw=config, names=names,
    )
