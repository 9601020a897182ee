"""Llama (2, 3, 3.1+ with llama3 rope scaling): RMSNorm, rotary attention, GQA.

llama.cpp runs it with interleaved ("NORM") rope, so Q and K rows are permuted on the way in.
"""
from ..gguf_mapping import GGUFMapping, decoder_metadata, llama3_rope_factors
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(
    model_type="llama",
    onnx="decoder",
    gguf=GGUFMapping(arch="LLAMA", metadata=decoder_metadata, permute_qk=True, extra_tensors=llama3_rope_factors),
))
