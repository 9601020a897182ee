"""wav2vec 2.0 speech models with a CTC head: ONNX export."""
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="wav2vec2", hf_class="Wav2Vec2ForCTC", onnx="wav2vec2"))
