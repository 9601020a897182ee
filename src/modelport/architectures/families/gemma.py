"""Gemma 2 and Gemma 3 (text): tied embeddings, sandwich norms, soft-capped logits.

HF's Gemma RMSNorm scales by (1 + w); llama.cpp's by w, so norms are stored with 1 added.
"""
from ..gguf_mapping import DECODER_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import AddOffset
from ..tensors import Tensors, norm
from .llama import EMBED, HEAD, TIED, TINY, attention, swiglu

SANDWICH = (*norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.post_attention_layernorm"),
            *norm("model.layers.{L}.pre_feedforward_layernorm"), *norm("model.layers.{L}.post_feedforward_layernorm"))
GEMMA2_KEYS = {
    **DECODER_KEYS,
    "{arch}.attention.key_length": Key("head_dim"),
    "{arch}.attention.value_length": Key("head_dim"),
    "{arch}.attn_logit_softcapping": Key("attn_logit_softcapping", "f32", when="get('attn_logit_softcapping') is not None"),
    "{arch}.final_logit_softcapping": Key("final_logit_softcapping", "f32",
                                          when="get('final_logit_softcapping') is not None"),
    "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
}

GEMMA2 = register_architecture(ArchitectureSpec(
    model_type="gemma2",
    tensors=Tensors(EMBED, (*attention(), *swiglu(bias=False), *SANDWICH), HEAD, TIED, prefix="model",
                    classes=("Gemma2ForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="GEMMA2", metadata=GEMMA2_KEYS, rules=(AddOffset(("norm.weight",), 1.0),)),
    tiny=dict(TINY, head_dim=16, query_pre_attn_scalar=16, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
              sliding_window=4096, hidden_activation="gelu_pytorch_tanh"),
))
GEMMA3 = register_architecture(ArchitectureSpec(model_type="gemma3_text", aliases=("gemma3",), onnx="decoder",
                                                tie_default=True))
