"""GPT-2: Conv1D weights stored (in, out), learned positions, LayerNorm, tied lm_head."""
from ..gguf_mapping import GGUFMapping, core_metadata
from ..registry import ArchitectureSpec, register_architecture


def _metadata(w, hp) -> None:
    core_metadata(w, hp)
    w.add_layer_norm_eps(hp.ln_eps if hp.ln_eps is not None else 1e-5)


SPEC = register_architecture(ArchitectureSpec(
    model_type="gpt2",
    onnx="decoder",
    gguf=GGUFMapping(arch="GPT2", metadata=_metadata,
                     transpose=(".c_attn.weight", ".c_proj.weight", ".c_fc.weight"),
                     skip=(".attn.bias", ".attn.masked_bias")),
))
