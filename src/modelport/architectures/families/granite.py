"""Granite (IBM): Llama's tensors with scaled embeddings, residuals, attention and logits (the multipliers
are metadata); llama.cpp runs it with interleaved rope, so Q/K are permuted as for Llama."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from .llama import PERMUTE_QK, TINY, decoder

MULTIPLIER_KEYS = {
    "{arch}.attention.scale": Key("attention_multiplier", "f32", when="get('attention_multiplier')"),
    "{arch}.embedding_scale": Key("embedding_multiplier", "f32", when="get('embedding_multiplier')"),
    "{arch}.residual_scale": Key("residual_multiplier", "f32", when="get('residual_multiplier')"),
    "{arch}.logit_scale": Key("logits_scaling", "f32", when="get('logits_scaling')"),
}

SPEC = register_architecture(ArchitectureSpec(
    model_type="granite",
    tensors=decoder("GraniteForCausalLM"),
    onnx="decoder",
    gguf=GGUFMapping(arch="GRANITE", metadata={**TEXT_KEYS, **MULTIPLIER_KEYS}, rules=PERMUTE_QK),
    tiny=dict(TINY, attention_multiplier=0.25, embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=4.0),
))
