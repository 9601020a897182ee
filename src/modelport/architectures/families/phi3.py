"""Phi-3: fused qkv_proj and gate_up_proj (llama.cpp takes them fused), NEOX rope."""
from ..gguf_mapping import GGUFMapping, decoder_metadata
from ..registry import ArchitectureSpec, register_architecture


def _metadata(w, hp) -> None:
    decoder_metadata(w, hp)
    w.add_rope_scaling_orig_ctx_len(hp.raw.get("original_max_position_embeddings") or hp.n_ctx)
    if hp.raw.get("sliding_window"):
        w.add_sliding_window(hp.raw["sliding_window"])


SPEC = register_architecture(ArchitectureSpec(
    model_type="phi3",
    onnx="decoder",
    gguf=GGUFMapping(arch="PHI3", metadata=_metadata),
))
