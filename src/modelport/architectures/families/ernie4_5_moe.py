"""ERNIE 4.5 MoE (Baidu): dense leading layers, then routed SwiGLU experts with a selection bias
(`moe_statics.e_score_correction_bias`) and shared experts."""
from dataclasses import replace

from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import only, t
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu
from .moe import MOE_KEYS, NO_EXPERT_ONNX, experts, shared_expert

P = "model.layers.{L}.mlp"
MOE = "L >= get('moe_layer_start_index', 0) and (L + 1) % get('moe_layer_interval', 1) == 0"
SHARED = "moe_intermediate_size * moe_num_shared_experts"
LAYER = (*attention(qkv_bias="get('use_bias', False)", o_bias="get('use_bias', False)"),
         *only(MOE, [*experts(P), t(f"{P}.moe_statics.e_score_correction_bias", 1, "experts")]),
         *only(f"({MOE}) and get('moe_num_shared_experts', 0)", shared_expert(P, SHARED, "shared_experts")),
         *only(f"not ({MOE})", swiglu(bias=False)),
         *LAYER_NORMS)
KEYS = {**TEXT_KEYS, **MOE_KEYS,
        "{arch}.interleave_moe_layer_step": Key("get('moe_layer_interval', 1)"),
        "{arch}.leading_dense_block_count": Key("get('moe_layer_start_index', 0)"),
        "{arch}.expert_shared_count": Key("shared_experts"),
        "{arch}.expert_shared_feed_forward_length": Key(SHARED, when="get('moe_num_shared_experts', 0)")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="ernie4_5_moe",
    # its multi-token-prediction head, model.mtp_* (transformers ignores "mtp"; llama.cpp's converter skips it)
    tensors=replace(decoder("Ernie4_5_MoeForCausalLM", LAYER), unloaded=(r"^model\.mtp_",)),
    tie_default=True,
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="ERNIE4_5_MOE", metadata=KEYS,
                     names={"model.layers.{L}.mlp.moe_statics.e_score_correction_bias": "blk.{L}.exp_probs_b.bias"}),
    tiny=dict(TINY, moe_num_experts=4, moe_k=2, moe_intermediate_size=32, moe_num_shared_experts=1,
              moe_layer_start_index=1, tie_word_embeddings=False),
))
