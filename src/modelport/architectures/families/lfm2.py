"""LFM2 (Liquid AI): a hybrid of gated short-convolution layers and GQA attention layers (`layer_types`:
"conv" or "full_attention"), each followed by a SwiGLU, with per-head Q/K norms and NEOX rope.

The layer kind comes from the config through the templates' conditions; llama.cpp learns it from the
per-layer KV head count (0 for a conv layer), which is how the config's `layer_types` is read back. The
conv kernel [d, 1, L] is stored as [d, L] (rules.Squeeze) and llama-quantize keeps it in F32. With
`block_auto_adjust_ff_dim`, the MLP is 2/3 of intermediate_size, times a multiplier, rounded up to
`block_multiple_of`: that width is what the metadata states.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Squeeze
from ..tensors import Tensors, linear, norm, only, t
from .llama import EMBED, TIED, TINY

P = "model.layers.{L}"
CONV, ATTENTION = "layer_types[L] == 'conv'", "layer_types[L] != 'conv'"
CONV_BIAS = "get('conv_bias', False)"
_TWO_THIRDS = "int(2 * intermediate_size / 3)"
_SCALED = f"(int(block_ffn_dim_multiplier * {_TWO_THIRDS}) if get('block_ffn_dim_multiplier') else {_TWO_THIRDS})"
FFN = (f"block_multiple_of * (({_SCALED} + block_multiple_of - 1) // block_multiple_of) "
       "if get('block_auto_adjust_ff_dim', True) else intermediate_size")

LAYER = (
    *only(CONV, [t(f"{P}.conv.conv.weight", "hidden", 1, "conv_L_cache"),
                 t(f"{P}.conv.conv.bias", "hidden", when=CONV_BIAS),
                 *linear(f"{P}.conv.in_proj", "3 * hidden", "hidden", CONV_BIAS),
                 *linear(f"{P}.conv.out_proj", "hidden", "hidden", CONV_BIAS)]),
    *only(ATTENTION, [*linear(f"{P}.self_attn.q_proj", "heads * head_dim", "hidden"),
                      *linear(f"{P}.self_attn.k_proj", "kv_heads * head_dim", "hidden"),
                      *linear(f"{P}.self_attn.v_proj", "kv_heads * head_dim", "hidden"),
                      *linear(f"{P}.self_attn.out_proj", "hidden", "heads * head_dim"),
                      *norm(f"{P}.self_attn.q_layernorm", "head_dim"),
                      *norm(f"{P}.self_attn.k_layernorm", "head_dim")]),
    *linear(f"{P}.feed_forward.w1", FFN, "hidden"),
    *linear(f"{P}.feed_forward.w3", FFN, "hidden"),
    *linear(f"{P}.feed_forward.w2", "hidden", FFN),
    *norm(f"{P}.operator_norm"),
    *norm(f"{P}.ffn_norm"),
)
HEAD = (*norm("model.embedding_norm"), t("lm_head.weight", "vocab", "hidden"))

# per layer: the KV heads of an attention layer, 0 for a conv layer (read back as the layer kinds)
# tried: the export stops at transformers' cache layer for these states ('LinearAttentionLayer' has no 'keys')
CONV_STATE = "short convolutions carry state along the sequence (transformers' own cache object)"
NO_ONNX = ("torch.onnx cannot export transformers' recurrent cache layer (a short-convolution or linear-attention "
           "state, not a KV cache) through the decoder export")

LAYER_KV_HEADS = Key("[0 if k == 'conv' else kv_heads for k in layer_types]", "array", inverse=(
    ("layer_types", "['conv' if n == 0 else 'full_attention' for n in value]"),
    ("num_key_value_heads", "max(value)")))

SPEC = register_architecture(ArchitectureSpec(
    model_type="lfm2",
    recurrent=CONV_STATE,
    tensors=Tensors(EMBED, LAYER, HEAD, TIED, prefix="model", classes=("Lfm2ForCausalLM",)),
    tie_default=True,
    no_onnx=NO_ONNX,
    gguf=GGUFMapping(
        arch="LFM2", rules=(Squeeze(("conv.conv.weight",)),),
        metadata={**TEXT_KEYS, "{arch}.feed_forward_length": Key(FFN, inverse=(
                      ("intermediate_size", "value"), ("block_auto_adjust_ff_dim", "False"))),
                  "{arch}.attention.head_count_kv": LAYER_KV_HEADS,
                  "{arch}.shortconv.l_cache": Key("conv_L_cache")}),
    tiny=dict({k: v for k, v in TINY.items() if k != "rms_norm_eps"}, norm_eps=1e-5, layer_types=["conv", "full_attention"], conv_L_cache=3, block_multiple_of=32,
              block_auto_adjust_ff_dim=True, block_ffn_dim_multiplier=1.0, tie_word_embeddings=True),
))
