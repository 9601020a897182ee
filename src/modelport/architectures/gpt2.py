"""GPT-2: Conv1D weights stored (in, out), learned positions, tied lm_head."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="gpt2"))
