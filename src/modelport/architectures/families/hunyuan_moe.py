"""Hunyuan MoE (Tencent, Hunyuan-A13B): Hunyuan dense's attention (per-head Q/K RMSNorms after rope, NEOX
rope) with softmax-routed SwiGLU experts, their top-k weights renormalised, beside one always-on shared MLP.
transformers sizes experts and shared MLP by `intermediate_size` (the original config's per-layer
`moe_intermediate_size` is not read), as llama.cpp sizes them by the feed-forward length."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .hunyuan import DENSE
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu
from .moe import NO_EXPERT_ONNX, experts

P = "model.layers.{L}"

SPEC = register_architecture(ArchitectureSpec(
    model_type="hunyuan_v1_moe",
    tensors=decoder("HunYuanMoEV1ForCausalLM", (
        *attention(), *norm(f"{P}.self_attn.query_layernorm", "head_dim"),
        *norm(f"{P}.self_attn.key_layernorm", "head_dim"),
        *experts(f"{P}.mlp", ffn="ffn", router="gate.wg"), *swiglu(f"{P}.mlp.shared_mlp", bias=False),
        *LAYER_NORMS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="HUNYUAN_MOE", metadata={
        **TEXT_KEYS,
        # top-k may be given per layer (the released config's lists), llama.cpp takes one for all
        "{arch}.expert_used_count": Key("uniform(moe_topk)", inverse=(("moe_topk", "value"),)),
        "{arch}.expert_feed_forward_length": Key("ffn"),
        "{arch}.expert_shared_feed_forward_length": Key("ffn"),
        "{arch}.expert_shared_count": Key(1),
    }, requires={**DENSE.gguf.requires,
                 "uniform(get('moe_topk', 1)) is not None": "llama.cpp routes every layer to the same number of experts"}),
    tiny=dict(TINY, head_dim=16, num_experts=4, moe_topk=2, tie_word_embeddings=False),
))
