"""Encoder-only text models that only export to ONNX (llama.cpp's BERT arch takes BERT alone)."""
from ..registry import ArchitectureSpec, register_architecture

ROBERTA = register_architecture(ArchitectureSpec(model_type="roberta", hf_class="AutoModel",
                                                 aliases=("xlm-roberta",), onnx="encoder"))
DISTILBERT = register_architecture(ArchitectureSpec(model_type="distilbert", hf_class="AutoModel", onnx="encoder"))
ELECTRA = register_architecture(ArchitectureSpec(model_type="electra", hf_class="AutoModel", onnx="encoder"))
