"""T5 and mT5 encoder-decoders: ONNX export as the whole model, its encoder and its decoder."""
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="t5", hf_class="T5ForConditionalGeneration",
                                              aliases=("mt5",), onnx="t5"))
