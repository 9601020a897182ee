"""Gemma, Gemma 2 and Gemma 3 (text): tied embeddings, soft-capped logits, Gemma 2/3's sandwich norms.

HF's Gemma RMSNorm scales by (1 + w); llama.cpp's by w, so norms (Gemma 3's q/k norms too) are stored
with 1 added. Gemma 3's sliding-window layers use their own rope base (`rope.freq_base_swa`).
"""
from ..gguf_mapping import DECODER_KEYS, TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import AddOffset
from ..tensors import Tensors, norm
from .llama import EMBED, HEAD, LAYER_NORMS, TIED, TINY, attention, swiglu

NORM_PLUS_ONE = (AddOffset(("norm.weight",), 1.0),)
SANDWICH = (*norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.post_attention_layernorm"),
            *norm("model.layers.{L}.pre_feedforward_layernorm"), *norm("model.layers.{L}.post_feedforward_layernorm"))
HEAD_DIM_KEYS = {"{arch}.attention.key_length": Key("head_dim"), "{arch}.attention.value_length": Key("head_dim")}
SOFTCAP_KEYS = {
    "{arch}.attn_logit_softcapping": Key("attn_logit_softcapping", "f32", when="get('attn_logit_softcapping') is not None"),
    "{arch}.final_logit_softcapping": Key("final_logit_softcapping", "f32",
                                          when="get('final_logit_softcapping') is not None"),
    "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
}


def query_scale(layers_27b: int) -> dict[str, str]:
    """llama.cpp scales queries by 1/sqrt(head_dim), or by 1/sqrt(hidden / heads) for the 27B model
    (which it knows by its layer count), whatever query_pre_attn_scalar says."""
    return {f"get('query_pre_attn_scalar', head_dim) == (hidden // heads if layers == {layers_27b} else head_dim)":
            "queries are scaled by the head size (query_pre_attn_scalar), or hidden/heads for the 27B model"}


TINY_GEMMA = dict(TINY, head_dim=16, query_pre_attn_scalar=16, hidden_activation="gelu_pytorch_tanh")

GEMMA = register_architecture(ArchitectureSpec(
    model_type="gemma",
    tensors=Tensors(EMBED, (*attention(), *swiglu(bias=False), *LAYER_NORMS), HEAD, TIED, prefix="model",
                    classes=("GemmaForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="GEMMA", metadata={**TEXT_KEYS, **HEAD_DIM_KEYS}, rules=NORM_PLUS_ONE),
    tiny=dict(TINY_GEMMA),
))
GEMMA2 = register_architecture(ArchitectureSpec(
    model_type="gemma2",
    tensors=Tensors(EMBED, (*attention(), *swiglu(bias=False), *SANDWICH), HEAD, TIED, prefix="model",
                    classes=("Gemma2ForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="GEMMA2", metadata={**DECODER_KEYS, **HEAD_DIM_KEYS, **SOFTCAP_KEYS}, rules=NORM_PLUS_ONE,
                     requires=query_scale(46)),
    tiny=dict(TINY_GEMMA, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096),
))
GEMMA3 = register_architecture(ArchitectureSpec(
    model_type="gemma3_text",
    aliases=("gemma3",),
    tensors=Tensors(EMBED, (*attention(qk_norm=True), *swiglu(bias=False), *SANDWICH), HEAD, TIED, prefix="model",
                    classes=("Gemma3ForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="GEMMA3", metadata={**TEXT_KEYS, **HEAD_DIM_KEYS, **SOFTCAP_KEYS}, rules=NORM_PLUS_ONE,
                     requires=query_scale(62)),
    tiny=dict(TINY_GEMMA, sliding_window=4096, final_logit_softcapping=None),
))
