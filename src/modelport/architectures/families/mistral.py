"""Mistral: llama.cpp runs it as LLAMA (the same permuted Q/K); sliding window is not used there."""
from ..gguf_mapping import GGUFMapping, decoder_metadata
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(
    model_type="mistral",
    onnx="decoder",
    gguf=GGUFMapping(arch="LLAMA", metadata=decoder_metadata, permute_qk=True),
))
