"""BitNet b1.58 (Microsoft) as transformers runs it unquantized: Llama's attention with an RMSNorm before the
output projection (`attn_sub_norm`), a SwiGLU MLP with an RMSNorm before its down projection
(`ffn_sub_norm`), NEOX rope, the head tied to the embedding; llama.cpp's BITNET.

The weights go in as transformers computes with them. llama.cpp's converter instead ternarises the
projections (w -> round(w / mean|w|) * mean|w|, clamped to -1..1), which is the identity only on weights
that are ternary already (a BitLinear checkpoint's dequantized ones) and another function on any other."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu

P = "model.layers.{L}"

SPEC = register_architecture(ArchitectureSpec(
    model_type="bitnet",
    tensors=decoder("BitNetForCausalLM", (
        *attention(), *norm(f"{P}.self_attn.attn_sub_norm"),
        *swiglu(bias=False), *norm(f"{P}.mlp.ffn_sub_norm", "ffn"), *LAYER_NORMS)),
    onnx="decoder",
    gguf=GGUFMapping(arch="BITNET", metadata=TEXT_KEYS, requires={
        "get('hidden_act', 'relu2') == 'silu'": "llama.cpp's BitNet MLP is SwiGLU (SiLU); transformers' default, "
                                                "and the released model's, is ReLU²",
        "tie": "llama.cpp's BitNet computes its logits with the token embedding (tied head)",
        "not get('attention_bias', False)": "llama.cpp's BitNet has no Q/K/V biases",
    }, names={f"{P}.self_attn.attn_sub_norm.weight": "blk.{L}.attn_sub_norm.weight",    # gguf-py knows the
              f"{P}.mlp.ffn_sub_norm.weight": "blk.{L}.ffn_sub_norm.weight"}),          # original names only
    tiny=dict(TINY, hidden_act="silu", tie_word_embeddings=True),
))
