"""Mixtral: Llama attention (Q/K permuted for llama.cpp's LLAMA arch) with a sparse MoE of SwiGLU experts
(w1 gate, w3 up, w2 down) behind a softmax router."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from .llama import LAYER_NORMS, PERMUTE_QK, TINY, attention, decoder
from .moe import NO_EXPERT_ONNX, experts

LAYER = (*attention(qkv_bias=False, o_bias=False),
         *experts("model.layers.{L}.block_sparse_moe", "w1", "w3", "w2", ffn="ffn"), *LAYER_NORMS)

SPEC = register_architecture(ArchitectureSpec(
    model_type="mixtral",
    tensors=decoder("MixtralForCausalLM", LAYER),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="LLAMA", metadata=TEXT_KEYS, rules=PERMUTE_QK),
    tiny=dict(TINY, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False),
))
