"""What mixture-of-experts families share: routers and experts as templates, and the MoE metadata keys.

Experts are saved one tensor per expert (`...experts.{E}...`); the GGUF mapping stacks them into
llama.cpp's 3-D `*_exps` tensors (gguf_mapping.py), so a family states only its own names.
"""
from __future__ import annotations

from ..gguf_mapping import Key
from ..tensors import linear, t

# why no MoE family has an ONNX export (tried for every one: the export stops at the experts)
NO_EXPERT_ONNX = ("torch.onnx cannot export transformers' expert dispatch (its grouped_mm fallback, or the eager "
                  "loop over the experts a batch hits)")

MOE_KEYS = {
    "{arch}.expert_feed_forward_length": Key("expert_ffn", when="get('moe_intermediate_size')"),
    "{arch}.expert_shared_feed_forward_length": Key("shared_expert_intermediate_size",
                                                    when="get('shared_expert_intermediate_size')"),
}


# DeepSeek-V3-style routing (dots1, GLM-4.5): leading dense layers, shared experts, sigmoid scores with a
# selection bias, scaled and maybe renormalised weights
SIGMOID = 2                     # gguf.ExpertGatingFuncType.SIGMOID
ROUTED_KEYS = {
    "{arch}.leading_dense_block_count": Key("get('first_k_dense_replace', 0)"),
    "{arch}.expert_shared_count": Key("shared_experts"),
    "{arch}.expert_weights_scale": Key("get('routed_scaling_factor', 1.0)", "f32"),
    "{arch}.expert_weights_norm": Key("get('norm_topk_prob', False)", "bool"),
    "{arch}.expert_gating_func": Key(SIGMOID),
}


# expert groups (DeepSeek-V3's rule: a group scored by its two best experts), as the converter writes them for
# any config naming them
GROUP_KEYS = {
    "{arch}.expert_group_count": Key("n_group", when="get('n_group') is not None"),
    "{arch}.expert_group_used_count": Key("topk_group", when="get('topk_group') is not None"),
}


# the selection bias, saved as `gate.e_score_correction_bias`, is llama.cpp's `exp_probs_b.bias`
SELECTION_BIAS = {"model.layers.{L}.mlp.gate.e_score_correction_bias": "blk.{L}.exp_probs_b.bias"}


def experts(prefix: str, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj",
            ffn: str = "expert_ffn", router: str = "gate") -> list:
    """A router (experts x hidden) and every expert's SwiGLU, in the order transformers saves them."""
    return [t(f"{prefix}.{router}.weight", "experts", "hidden"),
            t(f"{prefix}.experts.{{E}}.{gate}.weight", ffn, "hidden"),
            t(f"{prefix}.experts.{{E}}.{up}.weight", ffn, "hidden"),
            t(f"{prefix}.experts.{{E}}.{down}.weight", "hidden", ffn)]


def shared_expert(prefix: str, ffn: str, name: str = "shared_expert", when: str | None = None,
                  bias: bool | str = False) -> list:
    return [*linear(f"{prefix}.{name}.gate_proj", ffn, "hidden", bias, when=when),
            *linear(f"{prefix}.{name}.up_proj", ffn, "hidden", bias, when=when),
            *linear(f"{prefix}.{name}.down_proj", "hidden", ffn, bias, when=when)]
