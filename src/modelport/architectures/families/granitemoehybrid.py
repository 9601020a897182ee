"""Granite 4 hybrid (IBM, granitemoehybrid): Mamba-2 layers and attention layers (`layer_types`: "mamba"
or "attention"), every layer followed by Granite MoE's experts and a shared expert, with Granite's
multipliers. Attention layers have no position embedding unless `position_embedding_type` is "rope".
The dense variant (`num_local_experts` 0: granite-4.0-h-micro) has the shared MLP alone, which
llama.cpp's GRANITE_HYBRID runs as its plain FFN (`ffn_gate`/`ffn_up`/`ffn_down`, sized by
`feed_forward_length`), as its converter names it.

The layer kind comes from the config through the templates' conditions; llama.cpp learns it from the
per-layer KV head count (0 for a Mamba layer), which is how `layer_types` is read back. The Mamba-2
tensors go through the same rules as Mamba-2's (mamba.py); the experts and shared expert split as
Granite MoE's (granite.py).
"""
from dataclasses import replace

from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, split
from ..registry import ArchitectureSpec, Variant, register_architecture
from ..rules import Grouped, NegExp, PermuteHeads, Squeeze, Unsqueeze
from ..tensors import linear, norm, only, t
from .granite import EXPERTS, MULTIPLIER_KEYS, SHARED, TINY_MOE, moe_mapping
from .llama import LAYER_NORMS, TINY, PERMUTE_QK, attention, decoder, swiglu
from .mamba import MAMBA_STATE, NO_ONNX

P = "model.layers.{L}.mamba"
MAMBA = "layer_types[L] in ('mamba', 'linear_attention')"
INNER = "mamba_expand * hidden"
CONV_DIM = f"{INNER} + 2 * mamba_n_groups * mamba_d_state"
CONV_BIAS, PROJ_BIAS = "get('mamba_conv_bias', True)", "get('mamba_proj_bias', False)"



def mamba2_layer(where: str) -> list:
    """A Mamba-2 mixer's tensors (under `.mamba`), in the layers where `where` holds."""
    return only(where, [
        t(f"{P}.dt_bias", "mamba_n_heads"), t(f"{P}.A_log", "mamba_n_heads"), t(f"{P}.D", "mamba_n_heads"),
        t(f"{P}.conv1d.weight", CONV_DIM, 1, "mamba_d_conv"), t(f"{P}.conv1d.bias", CONV_DIM, when=CONV_BIAS),
        *linear(f"{P}.in_proj", f"{INNER} + {CONV_DIM} + mamba_n_heads", "hidden", PROJ_BIAS),
        *norm(f"{P}.norm", INNER), *linear(f"{P}.out_proj", "hidden", INNER, PROJ_BIAS)])


LAYER = (
    *LAYER_NORMS, *only("experts > 0", EXPERTS),
    *linear(f"{SHARED}.input_linear", "2 * shared_intermediate_size", "hidden"),
    *linear(f"{SHARED}.output_linear", "hidden", "shared_intermediate_size"),
    *mamba2_layer(MAMBA),
    *only(f"not ({MAMBA})", attention()),
)

_MOE = moe_mapping(shared=True)
MAPPING = GGUFMapping(
    arch="GRANITE_HYBRID", splits=_MOE.splits,
    rules=(*PERMUTE_QK, NegExp(("A_log",)), Squeeze(("conv1d.weight",)), Unsqueeze(("A_log", ".D")),
           Grouped(("mamba.norm.weight",), "mamba_n_groups")),
    names={**_MOE.names, f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
    metadata={
        **TEXT_KEYS, **MULTIPLIER_KEYS,
        # the converter writes both counts whenever the config has them, 0 for the dense variant (read back so)
        "{arch}.expert_count": Key("experts", when="get('num_local_experts') is not None"),
        "{arch}.expert_used_count": Key("experts_used", when="get('num_experts_per_tok') is not None"),
        "{arch}.expert_shared_feed_forward_length": Key("shared_intermediate_size"),
        "{arch}.attention.head_count_kv": Key(
            f"[0 if k in ('mamba', 'linear_attention') else kv_heads for k in layer_types]", "array",
            inverse=(("layer_types", "['mamba' if n == 0 else 'attention' for n in value]"),
                     ("num_key_value_heads", "max(value)"))),
        "{arch}.ssm.conv_kernel": Key("mamba_d_conv"),
        "{arch}.ssm.state_size": Key("mamba_d_state"),
        "{arch}.ssm.group_count": Key("mamba_n_groups"),
        "{arch}.ssm.inner_size": Key(INNER),
        "{arch}.ssm.time_step_rank": Key("mamba_n_heads"),
        "{arch}.rope.scaling.finetuned": Key("get('position_embedding_type') == 'rope'", "bool",
                                             inverse=(("position_embedding_type", "'rope' if value else None"),)),
    },
    requires={"mamba_expand == 2": "llama.cpp's Granite hybrid runs only an inner size of twice the hidden size",
              "get('mamba_d_head') == mamba_expand * hidden // mamba_n_heads":
                  "its Mamba-2 heads split the inner size evenly",
              "experts > 0 or ffn == shared_intermediate_size":
                  "llama.cpp sizes a dense Granite hybrid's MLP by feed_forward_length (intermediate_size), "
                  "so it must equal shared_intermediate_size"})

SPEC = register_architecture(ArchitectureSpec(
    model_type="granitemoehybrid",
    tensors=decoder("GraniteMoeHybridForCausalLM", LAYER),
    gguf=MAPPING,
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(TINY_MOE, shared_intermediate_size=64, layer_types=["mamba", "attention"], mamba_n_heads=8,
              mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2,
              position_embedding_type=None),
    # a dense Granite 4 hybrid (granite-4.0-h-micro's kind): the same arch, its shared MLP llama.cpp's plain FFN
    variants=(Variant("dense", "experts == 0", replace(
        MAPPING,
        splits={**MAPPING.splits, f"{SHARED}.input_linear.weight":
                split("blk.{L}.ffn_gate.weight", "blk.{L}.ffn_up.weight", axis=-2)},
        names={**MAPPING.names, f"{SHARED}.output_linear.weight": "blk.{L}.ffn_down.weight"}),
        tiny=dict(num_local_experts=0, num_experts_per_tok=0, intermediate_size=64)),),
))


# Bamba (IBM/Princeton): the same Mamba-2 + attention hybrid with a dense SwiGLU after every layer, attention
# at `attn_layer_indices`, partial rotary; llama.cpp runs it as the Granite hybrid without experts
BAMBA_MAMBA = "L not in attn_layer_indices"
BAMBA = register_architecture(ArchitectureSpec(
    model_type="bamba",
    tensors=decoder("BambaForCausalLM", (
        *swiglu("model.layers.{L}.feed_forward"),
        *norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.pre_ff_layernorm"),
        *mamba2_layer(BAMBA_MAMBA),
        *only(f"not ({BAMBA_MAMBA})", attention())),
        head=(*norm("model.final_layernorm"), t("lm_head.weight", "vocab", "hidden"))),
    gguf=GGUFMapping(
        arch="GRANITE_HYBRID",
        rules=(PermuteHeads(("q_proj.weight", "q_proj.bias"), "heads", "rot_dim"),
               PermuteHeads(("k_proj.weight", "k_proj.bias"), "kv_heads", "rot_dim"),
               *(r for r in MAPPING.rules if not isinstance(r, PermuteHeads))), names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata={**{k: v for k, v in MAPPING.metadata.items() if "shared" not in k},
                  "{arch}.attention.head_count_kv": Key(
                      "[kv_heads if i in attn_layer_indices else 0 for i in range(layers)]", "array",
                      inverse=(("attn_layer_indices", "[i for i in range(len(value)) if value[i] > 0]"),
                               ("num_key_value_heads", "max(value)"))),
                  "{arch}.rope.scaling.finetuned": Key(True, "bool")},
        requires={k: v for k, v in MAPPING.requires.items() if "experts" not in k}),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(TINY, tie_word_embeddings=False, attn_layer_indices=[1],
              mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2),
))
