"""Whisper speech recognition: ONNX export as the whole model, its encoder and its decoder."""
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="whisper", hf_class="WhisperForConditionalGeneration",
                                              onnx="whisper"))
