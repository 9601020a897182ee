"""Gemma 2 and Gemma 3 (text): tied embeddings, sandwich norms, soft-capped logits.

HF's Gemma RMSNorm scales by (1 + w); llama.cpp's by w, so norms are stored with 1 added.
"""
from ..gguf_mapping import GGUFMapping, decoder_metadata
from ..registry import ArchitectureSpec, register_architecture


def _gemma2_metadata(w, hp) -> None:
    decoder_metadata(w, hp)
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    if hp.raw.get("attn_logit_softcapping") is not None:
        w.add_attn_logit_softcapping(hp.raw["attn_logit_softcapping"])
    if hp.raw.get("final_logit_softcapping") is not None:
        w.add_final_logit_softcapping(hp.raw["final_logit_softcapping"])
    if hp.raw.get("sliding_window"):
        w.add_sliding_window(hp.raw["sliding_window"])


GEMMA2 = register_architecture(ArchitectureSpec(
    model_type="gemma2",
    onnx="decoder",
    gguf=GGUFMapping(arch="GEMMA2", metadata=_gemma2_metadata, norm_offset=1.0),
))
GEMMA3 = register_architecture(ArchitectureSpec(model_type="gemma3_text", aliases=("gemma3",), onnx="decoder"))
