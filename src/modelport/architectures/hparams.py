"""One view of a config's hyper-parameters, whatever names and transformers version wrote it.

transformers 5 writes `rope_parameters` where older versions wrote `rope_theta` + `rope_scaling`;
GPT-2 and BERT use their own names (`n_embd`, `n_layer`, ...). Architectures read this, not the dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def first(config: dict, *names: str, default=None):
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


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

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)


def rope_settings(config: dict) -> tuple[float, dict]:
    params = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or {})
    theta = first(params, "rope_theta") or first(config, "rope_theta", default=10000.0)
    merged = {**scaling, **{k: v for k, v in params.items() if k != "rope_theta"}}
    kind = merged.get("rope_type") or merged.get("type") or "default"
    return float(theta), ({} if kind == "default" else {**merged, "rope_type": kind})


def hparams(config: dict) -> HParams:
    n_embd = first(config, "hidden_size", "n_embd", "d_model")
    n_head = first(config, "num_attention_heads", "n_head")
    theta, rope = rope_settings(config)
    return HParams(
        n_ctx=first(config, "max_position_embeddings", "n_positions", "n_ctx", default=2048),
        n_embd=n_embd,
        n_layer=first(config, "num_hidden_layers", "n_layer"),
        n_ff=first(config, "intermediate_size", "n_inner") or 4 * n_embd,
        n_head=n_head,
        n_head_kv=first(config, "num_key_value_heads", default=n_head),
        head_dim=first(config, "head_dim") or n_embd // n_head,
        vocab_size=first(config, "vocab_size"),
        rope_theta=theta,
        rms_eps=first(config, "rms_norm_eps"),
        ln_eps=first(config, "layer_norm_eps", "layer_norm_epsilon"),
        rope=rope,
        raw=config,
    )
