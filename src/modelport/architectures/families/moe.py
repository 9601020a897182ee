"""What mixture-of-experts families share: routers and experts as templates, and the MoE metadata keys.

Experts are saved one tensor per expert (`...experts.{E}...`); the GGUF mapping stacks them into
llama.cpp's 3-D `*_exps` tensors (gguf_mapping.py), so a family states only its own names.
"""
from __future__ import annotations

from ..gguf_mapping import Key
from ..tensors import linear, t

MOE_KEYS = {
    "{arch}.expert_feed_forward_length": Key("expert_ffn", when="get('moe_intermediate_size')"),
    "{arch}.expert_shared_feed_forward_length": Key("shared_expert_intermediate_size",
                                                    when="get('shared_expert_intermediate_size')"),
}


def experts(prefix: str, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj",
            ffn: str = "expert_ffn", router: str = "gate") -> list:
    """A router (experts x hidden) and every expert's SwiGLU, in the order transformers saves them."""
    return [t(f"{prefix}.{router}.weight", "experts", "hidden"),
            t(f"{prefix}.experts.{{E}}.{gate}.weight", ffn, "hidden"),
            t(f"{prefix}.experts.{{E}}.{up}.weight", ffn, "hidden"),
            t(f"{prefix}.experts.{{E}}.{down}.weight", "hidden", ffn)]


def shared_expert(prefix: str, ffn: str, name: str = "shared_expert", when: str | None = None) -> list:
    return [*linear(f"{prefix}.{name}.gate_proj", ffn, "hidden", when=when),
            *linear(f"{prefix}.{name}.up_proj", ffn, "hidden", when=when),
            *linear(f"{prefix}.{name}.down_proj", "hidden", ffn, when=when)]
