"""EXAONE 4 (LG AI): norms after attention and MLP, per-head Q/K norms, NEOX rope, optional sliding windows."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .llama import TINY, attention, decoder, swiglu

P = "model.layers.{L}"
KEYS = {**TEXT_KEYS,
        "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
        "{arch}.attention.sliding_window_pattern": Key("[t == 'sliding_attention' for t in layer_types]", "array",
                                                       when="get('sliding_window') and get('layer_types')")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="exaone4",
    tensors=decoder("Exaone4ForCausalLM", (*attention(qkv_bias=False, o_bias=False, qk_norm=True), *swiglu(bias=False),
                                           *norm(f"{P}.post_attention_layernorm"), *norm(f"{P}.post_feedforward_layernorm"))),
    onnx="decoder",
    gguf=GGUFMapping(arch="EXAONE4", metadata=KEYS),
    tiny=dict(TINY, sliding_window=4096, sliding_window_pattern=4),
))
