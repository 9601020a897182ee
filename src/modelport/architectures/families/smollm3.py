"""SmolLM3 (Hugging Face): Llama's tensors; every fourth layer skips rope (llama.cpp assumes that step)."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from .llama import PERMUTE_QK, TINY, decoder

SPEC = register_architecture(ArchitectureSpec(
    model_type="smollm3",
    tensors=decoder("SmolLM3ForCausalLM"),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="SMOLLM3", metadata=TEXT_KEYS, rules=PERMUTE_QK),
    tiny=dict(TINY, pad_token_id=None, num_hidden_layers=4),
))
