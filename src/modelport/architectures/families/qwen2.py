"""Qwen2: Llama's layout with Q/K/V biases; NEOX-style rope in llama.cpp, so no permutation."""
from ..gguf_mapping import GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors
from .llama import EMBED, HEAD, LAYER_NORMS, TIED, TINY, attention, swiglu

SPEC = register_architecture(ArchitectureSpec(
    model_type="qwen2",
    tensors=Tensors(EMBED, (*attention(qkv_bias=True, o_bias=False), *swiglu(bias=False), *LAYER_NORMS), HEAD, TIED,
                    prefix="model", classes=("Qwen2ForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="QWEN2"),
    tiny=dict(TINY, tie_word_embeddings=True),
))
