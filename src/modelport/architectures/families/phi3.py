"""Phi-3: fused qkv_proj and gate_up_proj (llama.cpp takes them fused), NEOX rope."""
from ..gguf_mapping import DECODER_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, t
from .llama import EMBED, HEAD, LAYER_NORMS, TIED, TINY

LAYER = (t("model.layers.{L}.self_attn.o_proj.weight", "hidden", "heads * head_dim"),
         t("model.layers.{L}.self_attn.qkv_proj.weight", "(heads + 2 * kv_heads) * head_dim", "hidden"),
         t("model.layers.{L}.mlp.gate_up_proj.weight", "2 * ffn", "hidden"),
         t("model.layers.{L}.mlp.down_proj.weight", "hidden", "ffn"),
         *LAYER_NORMS)
KEYS = {
    **DECODER_KEYS,
    "{arch}.rope.scaling.original_context_length": Key("get('original_max_position_embeddings') or ctx"),
    "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
}

SPEC = register_architecture(ArchitectureSpec(
    model_type="phi3",
    tensors=Tensors(EMBED, LAYER, HEAD, TIED, prefix="model", classes=("Phi3ForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="PHI3", metadata=KEYS),
    tiny=dict(TINY, num_key_value_heads=4, tie_word_embeddings=False, original_max_position_embeddings=512,
              pad_token_id=None),
    tiny_specials=("<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"),
))
