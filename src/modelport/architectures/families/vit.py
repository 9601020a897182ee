"""ViT image encoders (with or without a classification head): ONNX export."""
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="vit", hf_class="ViTModel", onnx="vit"))
