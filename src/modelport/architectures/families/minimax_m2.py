"""MiniMax-M2: whole-projection Q/K RMSNorms before a partial NEOX rope (the released configs' `rotary_dim`),
and in every layer sigmoid-routed SwiGLU experts (`w1`, `w3`, `w2`) chosen with a selection bias, their
weights renormalised; llama.cpp's MINIMAXM2."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm, t
from .llama import LAYER_NORMS, TINY, attention, decoder
from .moe import NO_EXPERT_ONNX, SIGMOID, experts

P = "model.layers.{L}"

SPEC = register_architecture(ArchitectureSpec(
    model_type="minimax_m2",
    tensors=decoder("MiniMaxM2ForCausalLM", (
        *attention(qkv_bias=False, o_bias=False), *norm(f"{P}.self_attn.q_norm", "heads * head_dim"),
        *norm(f"{P}.self_attn.k_norm", "kv_heads * head_dim"),
        *experts(f"{P}.block_sparse_moe", gate="w1", up="w3", down="w2", ffn="ffn"),
        t(f"{P}.block_sparse_moe.e_score_correction_bias", "experts"), *LAYER_NORMS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="MINIMAXM2", metadata={
        **TEXT_KEYS,
        "{arch}.expert_feed_forward_length": Key("ffn"),
        "{arch}.expert_gating_func": Key(SIGMOID),
        # the released configs say `rotary_dim`, transformers 5 a partial rotary factor
        "{arch}.rope.dimension_count": Key("rotary_dim if get('rotary_dim') else rot_dim"),
    }, names={f"{P}.block_sparse_moe.e_score_correction_bias": "blk.{L}.exp_probs_b.bias"}),
    tiny=dict(TINY, head_dim=16, rotary_dim=8, num_local_experts=4, num_experts_per_tok=2,
              tie_word_embeddings=False),
))
