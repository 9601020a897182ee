"""Mistral: Llama's tensors without biases; llama.cpp runs it as LLAMA (the same permuted Q/K); its sliding window is not used there."""
from ..gguf_mapping import GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors
from .llama import EMBED, HEAD, LAYER_NORMS, PERMUTE_QK, TIED, TINY, attention, swiglu

SPEC = register_architecture(ArchitectureSpec(
    model_type="mistral",
    tensors=Tensors(EMBED, (*attention(qkv_bias=False, o_bias=False), *swiglu(bias=False), *LAYER_NORMS), HEAD, TIED,
                    prefix="model", classes=("MistralForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="LLAMA", rules=PERMUTE_QK),
    tiny=dict(TINY, tie_word_embeddings=False, sliding_window=None),
))
