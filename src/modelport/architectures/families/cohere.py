"""Cohere Command-R: parallel attention and MLP after one bias-free LayerNorm, scaled logits, tied embeddings.
Its rope already pairs adjacent values (as llama.cpp's NORM rope does), so nothing is permuted."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .llama import TINY, attention, decoder, swiglu

P = "model.layers.{L}"
LAYER = (*attention(qkv_bias="get('attention_bias', False)", o_bias="get('attention_bias', False)"),
         *swiglu(bias=False), *norm(f"{P}.input_layernorm"))
KEYS = {**TEXT_KEYS, "{arch}.logit_scale": Key("get('logit_scale', 0.0625)", "f32")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="cohere",
    tensors=decoder("CohereForCausalLM", LAYER),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="COMMAND_R", metadata=KEYS),
    tiny=dict(TINY, logit_scale=0.25),
))
