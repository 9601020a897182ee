"""StableLM (2): LayerNorm with biases, partial NEOX rope, optionally parallel residuals and Q/K/V biases."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, norm, t
from .llama import EMBED, TIED, TINY, attention, swiglu

LAYER = (*attention(qkv_bias="get('use_qkv_bias', False)", o_bias=False), *swiglu(bias=False),
         *norm("model.layers.{L}.input_layernorm", bias=True),
         *norm("model.layers.{L}.post_attention_layernorm", bias=True, when="not get('use_parallel_residual', False)"))
KEYS = {**TEXT_KEYS, "{arch}.use_parallel_residual": Key("get('use_parallel_residual', False)", "bool")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="stablelm",
    tensors=Tensors(EMBED, LAYER, (*norm("model.norm", bias=True), t("lm_head.weight", "vocab", "hidden")), TIED,
                    prefix="model", classes=("StableLmForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="STABLELM", metadata=KEYS),
    tiny=dict(TINY, partial_rotary_factor=0.5, use_qkv_bias=True),
))
