"""Nemotron-H (NVIDIA): one mixer per layer, by `layers_block_type` (or the older `hybrid_override_pattern`,
M / * / -): a Mamba-2 mixer, attention without position embedding, or a ReLU² MLP (up, down).

The layer kind comes from the config through the templates' conditions; llama.cpp learns it from the
per-layer KV head count and feed-forward length (0 where a layer has none), which is how
`layers_block_type` is read back. The Mamba-2 tensors go through Mamba-2's rules (mamba.py).

With layers of kind 'moe' (Nemotron 3 Nano, Super) llama.cpp runs the model as another arch,
NEMOTRON_H_MOE (a variant of this spec, chosen by the config): each such layer is a sigmoid router with
a selection bias over ReLU² experts without a gate (in a latent space when `moe_latent_size` is set,
projected down and up around them), beside one ReLU² shared expert. llama.cpp makes every layer with a
feed-forward length a MoE layer in that arch, so the dense 'mlp' kind is refused beside 'moe'.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, Variant, register_architecture
from ..rules import Grouped, NegExp, Squeeze, Unsqueeze
from ..tensors import Tensors, linear, norm, only, t
from .mamba import MAMBA_STATE, NO_ONNX
from .moe import GROUP_KEYS, ROUTED_KEYS

P = "backbone.layers.{L}.mixer"
# the layer kinds as transformers 5 saves them, or from the older pattern string (M, *, -, E)
KINDS = ("(layers_block_type if get('layers_block_type') else ['mamba' if c == 'M' else 'attention' if c == '*' "
         "else 'mlp' if c == '-' else 'moe' for c in hybrid_override_pattern])")
KIND = f"{KINDS}[L]"
MAMBA, ATTENTION, MLP, MOE = (f"{KIND} in ('mamba', 'linear_attention')", f"{KIND} in ('attention', 'full_attention')",
                              f"{KIND} == 'mlp'", f"{KIND} == 'moe'")
INNER = "mamba_num_heads * mamba_head_dim"
CONV_DIM = f"{INNER} + 2 * n_groups * ssm_state_size"
CONV_BIAS, PROJ_BIAS = "get('use_conv_bias', True)", "get('mamba_proj_bias', False)"
MLP_BIAS = "get('mlp_bias', False)"
LATENT = "get('moe_latent_size')"
EXPERT_IN = f"{LATENT} if {LATENT} else hidden"            # the experts' width: the latent space's, or the model's

LAYER = (
    *norm("backbone.layers.{L}.norm"),
    *only(MAMBA, [t(f"{P}.dt_bias", "mamba_num_heads"), t(f"{P}.A_log", "mamba_num_heads"),
                  t(f"{P}.D", "mamba_num_heads"), t(f"{P}.conv1d.weight", CONV_DIM, 1, "conv_kernel"),
                  t(f"{P}.conv1d.bias", CONV_DIM, when=CONV_BIAS),
                  *linear(f"{P}.in_proj", f"{INNER} + {CONV_DIM} + mamba_num_heads", "hidden", PROJ_BIAS),
                  *norm(f"{P}.norm", INNER), *linear(f"{P}.out_proj", "hidden", INNER, PROJ_BIAS)]),
    *only(ATTENTION, [*linear(f"{P}.q_proj", "heads * head_dim", "hidden"),
                      *linear(f"{P}.k_proj", "kv_heads * head_dim", "hidden"),
                      *linear(f"{P}.v_proj", "kv_heads * head_dim", "hidden"),
                      *linear(f"{P}.o_proj", "hidden", "heads * head_dim")]),
    *only(MLP, [*linear(f"{P}.up_proj", "ffn", "hidden", MLP_BIAS), *linear(f"{P}.down_proj", "hidden", "ffn", MLP_BIAS)]),
    *only(MOE, [t(f"{P}.experts.{{E}}.up_proj.weight", "expert_ffn", EXPERT_IN),
                t(f"{P}.experts.{{E}}.down_proj.weight", EXPERT_IN, "expert_ffn"),
                t(f"{P}.gate.weight", "experts", "hidden"), t(f"{P}.gate.e_score_correction_bias", "experts"),
                *linear(f"{P}.shared_experts.up_proj", "moe_shared_expert_intermediate_size", "hidden", MLP_BIAS),
                *linear(f"{P}.shared_experts.down_proj", "hidden", "moe_shared_expert_intermediate_size", MLP_BIAS),
                *linear(f"{P}.fc1_latent_proj", LATENT, "hidden", MLP_BIAS, when=LATENT),
                *linear(f"{P}.fc2_latent_proj", "hidden", LATENT, MLP_BIAS, when=LATENT)]),
)
EMBED = (t("backbone.embeddings.weight", "vocab", "hidden"),)
HEAD = (*norm("backbone.norm_f"), t("lm_head.weight", "vocab", "hidden"))

RULES = (NegExp(("A_log",)), Squeeze(("conv1d.weight",)), Unsqueeze(("A_log", ".D")),
         Grouped(("mixer.norm.weight",), "n_groups"))
RELU2 = {"get('mlp_hidden_act', 'relu2') == 'relu2'": "llama.cpp's Nemotron-H MLP and experts are ReLU²"}


def metadata(ffn_kind: str, ffn: str) -> dict[str, Key]:
    """What llama.cpp's converter writes: per-layer arrays it learns each layer's kind from, the
    feed-forward length (config key `ffn`, of the `ffn_kind` layers; 0 elsewhere) and the KV heads (of the attention
    layers), read back in this order (the table's): feed-forward layers first, then attention layers; the
    rest are Mamba layers."""
    return {
        **{k: v for k, v in TEXT_KEYS.items() if "expert" not in k},
        "{arch}.feed_forward_length": Key(
            f"[{ffn} if k == '{ffn_kind}' else 0 for k in {KINDS}]", "array",
            inverse=((ffn, "max(value)"),
                     ("layers_block_type", f"['{ffn_kind}' if f else 'mamba' for f in value]"))),
        "{arch}.attention.head_count_kv": Key(
            f"[kv_heads if k in ('attention', 'full_attention') else 0 for k in {KINDS}]", "array",
            inverse=(("num_key_value_heads", "max(value)"),
                     ("layers_block_type", "['attention' if value[i] else layers_block_type[i] "
                                           "for i in range(len(value))]"))),
        "{arch}.ssm.conv_kernel": Key("conv_kernel"),
        "{arch}.ssm.state_size": Key("ssm_state_size"),
        "{arch}.ssm.group_count": Key("n_groups"),
        "{arch}.ssm.inner_size": Key(INNER),
        "{arch}.ssm.time_step_rank": Key("mamba_num_heads"),
    }


# NEMOTRON_H_MOE: the expert keys the converter adds (the routing's sigmoid is llama.cpp's for the arch)
MOE_METADATA = {
    **metadata("moe", "moe_intermediate_size"),
    "{arch}.expert_count": Key("experts"),
    "{arch}.expert_used_count": Key("experts_used"),
    "{arch}.expert_feed_forward_length": Key("moe_intermediate_size"),
    "{arch}.expert_shared_feed_forward_length": Key("moe_shared_expert_intermediate_size"),
    **{k: ROUTED_KEYS[k] for k in ("{arch}.expert_shared_count", "{arch}.expert_weights_norm",
                                   "{arch}.expert_weights_scale")},
    **GROUP_KEYS,
    "{arch}.moe_latent_size": Key(LATENT, when=f"{LATENT} is not None"),
}
MOE_GGUF = GGUFMapping(
    arch="NEMOTRON_H_MOE", rules=RULES, metadata=MOE_METADATA,
    names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias", f"{P}.gate.e_score_correction_bias": "blk.{L}.exp_probs_b.bias",
           f"{P}.experts.up_proj.weight": "blk.{L}.ffn_up_exps.weight",
           f"{P}.experts.down_proj.weight": "blk.{L}.ffn_down_exps.weight"},
    requires={**RELU2,
              f"'mlp' not in {KINDS}": "llama.cpp's NEMOTRON_H_MOE makes every feed-forward layer routed experts "
                                       "(a dense 'mlp' layer beside 'moe' ones)",
              f"not {MLP_BIAS}": "llama.cpp's Nemotron-H shared expert and latent projections have no bias"})

SPEC = register_architecture(ArchitectureSpec(
    model_type="nemotron_h",
    # transformers never ties its head; it ignores the multi-token-prediction head (mtp.*), which is not converted
    tensors=Tensors(EMBED, LAYER, HEAD, {}, prefix="backbone", classes=("NemotronHForCausalLM",), unloaded=(r"^mtp\.",)),
    gguf=GGUFMapping(
        arch="NEMOTRON_H",
        rules=RULES,
        names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata=metadata("mlp", "intermediate_size"),
        requires=RELU2),
    variants=(Variant("moe", f"'moe' in {KINDS}", MOE_GGUF,
                      tiny=dict(layers_block_type=["mamba", "moe", "attention", "moe"], n_routed_experts=4,
                                num_experts_per_tok=2, moe_intermediate_size=32,
                                moe_shared_expert_intermediate_size=48, moe_latent_size=32,
                                n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1,
                                topk_group=1)),),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              layers_block_type=["mamba", "attention", "mlp"], mamba_num_heads=8, mamba_head_dim=16, n_groups=2,
              ssm_state_size=16, conv_kernel=4, layer_norm_epsilon=1e-5, max_position_embeddings=512,
              tie_word_embeddings=False,
              moe_latent_size=None),        # a size, not a switch for the config rebuilt from a GGUF to try
))
