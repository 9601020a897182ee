"""Seed-OSS (ByteDance): Llama's layout with Q/K/V biases and an explicit head_dim; NEOX rope in llama.cpp."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors
from .llama import EMBED, HEAD, LAYER_NORMS, TIED, TINY, attention, swiglu

SPEC = register_architecture(ArchitectureSpec(
    model_type="seed_oss",
    tensors=Tensors(EMBED, (*attention(qkv_bias="get('attention_bias', True)", o_bias="get('attention_out_bias', False)"),
                            *swiglu(bias="get('mlp_bias', False)"), *LAYER_NORMS), HEAD, TIED, prefix="model",
                    classes=("SeedOssForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="SEED_OSS", metadata=TEXT_KEYS),
    tiny=dict(TINY, head_dim=32),
))
