"""CLIP image-text models: ONNX export as the whole model, its text tower and its vision tower."""
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="clip", hf_class="CLIPModel", onnx="clip"))
