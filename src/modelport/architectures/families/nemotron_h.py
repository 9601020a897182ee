"""Nemotron-H (NVIDIA): one mixer per layer, by `layers_block_type` (or the older `hybrid_override_pattern`,
M / * / -): a Mamba-2 mixer, attention without position embedding, or a ReLU² MLP (up, down).

The layer kind comes from the config through the templates' conditions; llama.cpp learns it from the
per-layer KV head count and feed-forward length (0 where a layer has none), which is how
`layers_block_type` is read back. The Mamba-2 tensors go through Mamba-2's rules (mamba.py).
The MoE variant (Nemotron-H MoE, llama.cpp's NEMOTRON_H_MOE) is not mapped.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Grouped, NegExp, Squeeze, Unsqueeze
from ..tensors import Tensors, linear, norm, only, t
from .mamba import MAMBA_STATE, NO_ONNX

P = "backbone.layers.{L}.mixer"
# the layer kinds as transformers 5 saves them, or from the older pattern string (M, *, -, E)
KINDS = ("(layers_block_type if get('layers_block_type') else ['mamba' if c == 'M' else 'attention' if c == '*' "
         "else 'mlp' if c == '-' else 'moe' for c in hybrid_override_pattern])")
KIND = f"{KINDS}[L]"
MAMBA, ATTENTION, MLP = (f"{KIND} in ('mamba', 'linear_attention')", f"{KIND} in ('attention', 'full_attention')",
                         f"{KIND} == 'mlp'")
INNER = "mamba_num_heads * mamba_head_dim"
CONV_DIM = f"{INNER} + 2 * n_groups * ssm_state_size"
CONV_BIAS, PROJ_BIAS = "get('use_conv_bias', True)", "get('mamba_proj_bias', False)"
MLP_BIAS = "get('mlp_bias', False)"

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
)
EMBED = (t("backbone.embeddings.weight", "vocab", "hidden"),)
HEAD = (*norm("backbone.norm_f"), t("lm_head.weight", "vocab", "hidden"))

SPEC = register_architecture(ArchitectureSpec(
    model_type="nemotron_h",
    tensors=Tensors(EMBED, LAYER, HEAD, {}, prefix="backbone",        # transformers never ties its head
                    classes=("NemotronHForCausalLM",)),
    gguf=GGUFMapping(
        arch="NEMOTRON_H",
        rules=(NegExp(("A_log",)), Squeeze(("conv1d.weight",)), Unsqueeze(("A_log", ".D")),
               Grouped(("mixer.norm.weight",), "n_groups")),
        names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata={
            **{k: v for k, v in TEXT_KEYS.items() if "expert" not in k},
            # read back in this order (the table's): MLP layers from the feed-forward lengths, then attention
            # layers from the KV heads; the rest are Mamba layers
            "{arch}.feed_forward_length": Key(f"[ffn if k == 'mlp' else 0 for k in {KINDS}]", "array",
                                              inverse=(("intermediate_size", "max(value)"),
                                                       ("layers_block_type", "['mlp' if f else 'mamba' for f in value]"))),
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
        },
        requires={"get('mlp_hidden_act', 'relu2') == 'relu2'": "llama.cpp's Nemotron-H MLP is ReLU²",
                  f"'moe' not in {KINDS}": "Nemotron-H MoE runs as llama.cpp's NEMOTRON_H_MOE, not mapped yet"}),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              layers_block_type=["mamba", "attention", "mlp"], mamba_num_heads=8, mamba_head_dim=16, n_groups=2,
              ssm_state_size=16, conv_kernel=4, layer_norm_epsilon=1e-5, max_position_embeddings=512,
              tie_word_embeddings=False),
))
