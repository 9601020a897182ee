"""Phi-3.5-MoE: separate Q/K/V, LayerNorms with biases and Mixtral-style experts.

No GGUF: llama.cpp runs PHIMOE with softmax top-k routing, where transformers routes with sparsemixer,
so the two compute different functions (max logit difference 0.19 on the tiny test model); a GGUF
modelport cannot prove is not written. HF, DCP and ONNX conversions are exact."""
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, norm, t
from .llama import EMBED, TINY, attention
from .moe import NO_EXPERT_ONNX, experts

P = "model.layers.{L}"
LAYER = (*attention(),
         *experts(f"{P}.block_sparse_moe", "w1", "w3", "w2", ffn="ffn"),
         *norm(f"{P}.input_layernorm", bias=True), *norm(f"{P}.post_attention_layernorm", bias=True))

SPEC = register_architecture(ArchitectureSpec(
    model_type="phimoe",
    tensors=Tensors(EMBED, LAYER, (*norm("model.norm", bias=True), t("lm_head.weight", "vocab", "hidden"),
                                   t("lm_head.bias", "vocab", when="get('lm_head_bias', False)")),
                    prefix="model", classes=("PhimoeForCausalLM",)),
    no_onnx=NO_EXPERT_ONNX,
    note="no GGUF: llama.cpp routes Phi-3.5-MoE's experts with softmax top-k, transformers with sparsemixer "
         "(max logit difference 0.19 on the test model)",
    tiny=dict(TINY, num_local_experts=4, num_experts_per_tok=2, rope_scaling=None, original_max_position_embeddings=512,
              lm_head_bias=True, attention_bias=True),
))
