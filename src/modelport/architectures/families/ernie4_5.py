"""ERNIE 4.5 (Baidu), dense: Llama's tensors without biases, an explicit head_dim; its rope already pairs
adjacent values, so nothing is permuted."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu

SPEC = register_architecture(ArchitectureSpec(
    model_type="ernie4_5",
    tensors=decoder("Ernie4_5ForCausalLM", (*attention(qkv_bias="get('use_bias', False)", o_bias="get('use_bias', False)"),
                                            *swiglu(bias="get('use_bias', False)"), *LAYER_NORMS)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="ERNIE4_5", metadata=TEXT_KEYS),
    tiny=dict(TINY, head_dim=16),
))
