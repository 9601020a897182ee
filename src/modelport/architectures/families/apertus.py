"""Apertus (Swiss AI): per-head Q/K RMSNorms before NEOX rope, llama3 rope scaling by default, and a
gateless MLP (up, down) with the xIELU activation, whose four parameters are one-value tensors per
layer. llama.cpp reads them as per-layer metadata arrays (`xielu.*`, the raw values: ggml applies the
softplus as transformers does), which the reader turns back into the tensors."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, llama3_rope_factors
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import linear, norm, t
from .llama import TINY, attention, decoder

P = "model.layers.{L}"
XIELU = ("alpha_p", "alpha_n", "beta", "eps")

SPEC = register_architecture(ArchitectureSpec(
    model_type="apertus",
    tensors=decoder("ApertusForCausalLM", (
        *attention(qk_norm=True),
        *linear(f"{P}.mlp.up_proj", "ffn", "hidden"), *linear(f"{P}.mlp.down_proj", "hidden", "ffn"),
        t(f"{P}.mlp.act_fn.alpha_p", 1), t(f"{P}.mlp.act_fn.alpha_n", 1), t(f"{P}.mlp.act_fn.beta"),
        t(f"{P}.mlp.act_fn.eps"),
        *norm(f"{P}.attention_layernorm"), *norm(f"{P}.feedforward_layernorm"))),
    onnx="decoder",
    gguf=GGUFMapping(arch="APERTUS", metadata=TEXT_KEYS, extra_tensors=llama3_rope_factors,
                     layer_values={f"{P}.mlp.act_fn.{name}": f"xielu.{name}" for name in XIELU},
                     requires={"get('hidden_act', 'xielu') == 'xielu'": "llama.cpp's Apertus MLP is xIELU"}),
    tiny=dict(TINY, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
              tie_word_embeddings=False),
))
