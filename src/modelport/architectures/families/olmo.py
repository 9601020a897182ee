"""OLMo, OLMo 2 and OLMo 3. OLMo's layer norms have no weights at all (no norm tensors); llama.cpp runs it with
interleaved rope (Q/K permuted), a fixed 1e-5 epsilon and an optional Q/K/V clamp. OLMo 2 norms after
attention and MLP, and normalises whole Q and K projections (NEOX rope, no permutation). OLMo 3 is OLMo 2 with sliding-window layers (`layer_types`), which
llama.cpp runs as OLMO2 with a sliding-window pattern."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, norm, t
from .llama import EMBED, PERMUTE_QK, TIED, TINY, attention, swiglu

OLMO_KEYS = {**TEXT_KEYS, "{arch}.attention.layer_norm_epsilon": Key(1e-5, "f32"),
             "{arch}.attention.clamp_kqv": Key("clip_qkv", "f32", when="get('clip_qkv') is not None")}
P = "model.layers.{L}"

OLMO = register_architecture(ArchitectureSpec(
    model_type="olmo",
    tensors=Tensors(EMBED, (*attention(), *swiglu(bias=False)),
                    (t("lm_head.weight", "vocab", "hidden"),), TIED, prefix="model", classes=("OlmoForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="OLMO", metadata=OLMO_KEYS, rules=PERMUTE_QK),
    tiny=dict(TINY, clip_qkv=8.0),
))
OLMO2_LAYER = (*attention(), *norm(f"{P}.self_attn.q_norm", "heads * head_dim"),
               *norm(f"{P}.self_attn.k_norm", "kv_heads * head_dim"), *swiglu(bias=False),
               *norm(f"{P}.post_attention_layernorm"), *norm(f"{P}.post_feedforward_layernorm"))
OLMO2_HEAD = (*norm("model.norm"), t("lm_head.weight", "vocab", "hidden"))

OLMO2 = register_architecture(ArchitectureSpec(
    model_type="olmo2",
    tensors=Tensors(EMBED, OLMO2_LAYER, OLMO2_HEAD, TIED, prefix="model", classes=("Olmo2ForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="OLMO2", metadata=TEXT_KEYS),
    tiny=dict(TINY),
))
OLMO3 = register_architecture(ArchitectureSpec(
    model_type="olmo3",
    tensors=Tensors(EMBED, OLMO2_LAYER, OLMO2_HEAD, TIED, prefix="model", classes=("Olmo3ForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="OLMO2", metadata={
        **TEXT_KEYS, "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
        "{arch}.attention.sliding_window_pattern": Key(
            "[t == 'sliding_attention' for t in layer_types]", "array", when="get('sliding_window') and get('layer_types')",
            inverse=(("layer_types", "['sliding_attention' if s else 'full_attention' for s in value]"),))}),
    tiny=dict(TINY, sliding_window=6, layer_types=["sliding_attention", "full_attention"]),
))
