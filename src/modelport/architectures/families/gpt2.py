"""GPT-2: Conv1D weights stored (in, out), learned positions, LayerNorm, tied lm_head."""
from ..gguf_mapping import CORE_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Transpose
from ..tensors import Tensors, norm, t

P = "transformer.h.{L}"
LAYER = (*norm(f"{P}.ln_1", bias=True),
         t(f"{P}.attn.c_attn.weight", "hidden", "3 * hidden"), t(f"{P}.attn.c_attn.bias", "3 * hidden"),
         t(f"{P}.attn.c_proj.weight", "hidden", "hidden"), t(f"{P}.attn.c_proj.bias", "hidden"),
         *norm(f"{P}.ln_2", bias=True),
         t(f"{P}.mlp.c_fc.weight", "hidden", "ffn"), t(f"{P}.mlp.c_fc.bias", "ffn"),
         t(f"{P}.mlp.c_proj.weight", "ffn", "hidden"), t(f"{P}.mlp.c_proj.bias", "hidden"))
KEYS = {**CORE_KEYS, "{arch}.attention.layer_norm_epsilon": Key("ln_eps if ln_eps is not None else 1e-5", "f32")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="gpt2",
    tensors=Tensors((t("transformer.wte.weight", "vocab", "hidden"), t("transformer.wpe.weight", "ctx", "hidden")),
                    LAYER, (*norm("transformer.ln_f", bias=True), t("lm_head.weight", "vocab", "hidden")),
                    {"lm_head.weight": "transformer.wte.weight"}, prefix="transformer",
                    classes=("GPT2LMHeadModel",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="GPT2", metadata=KEYS,
                     rules=(Transpose((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")),),
                     skip=(".attn.bias", ".attn.masked_bias")),
    tiny=dict(n_embd=64, n_layer=2, n_head=4, n_positions=512, n_inner=256, layer_norm_epsilon=1e-5,
              tie_word_embeddings=True),
))
