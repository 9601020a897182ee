"""Hunyuan dense (Tencent): Llama's layout with per-head Q/K RMSNorms (`query_layernorm`, `key_layernorm`),
an explicit head_dim, NEOX rope in llama.cpp (no Q/K permutation)."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu

P = "model.layers.{L}.self_attn"

DENSE = register_architecture(ArchitectureSpec(
    model_type="hunyuan_v1_dense",
    tensors=decoder("HunYuanDenseV1ForCausalLM", (
        *attention(), *norm(f"{P}.query_layernorm", "head_dim"), *norm(f"{P}.key_layernorm", "head_dim"),
        *swiglu(bias=False), *LAYER_NORMS)),
    onnx="decoder",
    gguf=GGUFMapping(arch="HUNYUAN_DENSE", metadata=TEXT_KEYS,
                     requires={"rope_type is None": "llama.cpp runs Hunyuan's NTK-alpha (dynamic) rope only as "
                                                    "the released models set it"}),
    tiny=dict(TINY, head_dim=16, tie_word_embeddings=False),
))
