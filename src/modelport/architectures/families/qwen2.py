"""Qwen2: Q/K/V biases; NEOX-style rope in llama.cpp, so no permutation."""
from ..gguf_mapping import GGUFMapping, decoder_metadata
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(
    model_type="qwen2",
    onnx="decoder",
    gguf=GGUFMapping(arch="QWEN2", metadata=decoder_metadata),
))
