"""Llama (2, 3, 3.1+ with llama3 rope scaling): RMSNorm, rotary attention, GQA, SwiGLU.

llama.cpp runs it with interleaved ("NORM") rope, so Q and K rows are permuted on the way in. Its
tensors are the pattern most decoders share (mistral, qwen2, qwen3 build on them here).
"""
from ..gguf_mapping import GGUFMapping, llama3_rope_factors
from ..registry import ArchitectureSpec, register_architecture
from ..rules import PermuteHeads
from ..tensors import Tensors, linear, norm, only, t

ATTENTION_BIAS = "get('attention_bias', False)"
MLP_BIAS = "get('mlp_bias', False)"
EMBED = (t("model.embed_tokens.weight", "vocab", "hidden"),)
HEAD = (*norm("model.norm"), t("lm_head.weight", "vocab", "hidden"))
TIED = {"lm_head.weight": "model.embed_tokens.weight"}
PERMUTE_QK = (PermuteHeads(("q_proj.weight", "q_proj.bias"), "heads"),
              PermuteHeads(("k_proj.weight", "k_proj.bias"), "kv_heads"))


def attention(qkv_bias: bool | str = ATTENTION_BIAS, o_bias: bool | str = ATTENTION_BIAS,
              qk_norm: bool | str = False) -> list:
    p = "model.layers.{L}.self_attn"
    return [*linear(f"{p}.q_proj", "heads * head_dim", "hidden", qkv_bias),
            *linear(f"{p}.k_proj", "kv_heads * head_dim", "hidden", qkv_bias),
            *linear(f"{p}.v_proj", "kv_heads * head_dim", "hidden", qkv_bias),
            *linear(f"{p}.o_proj", "hidden", "heads * head_dim", o_bias),
            *_when(qk_norm, norm(f"{p}.q_norm", "head_dim") + norm(f"{p}.k_norm", "head_dim"))]


def _when(condition: bool | str, templates: list) -> list:
    """`templates` always (True), never (False), or where an expression holds."""
    return only(condition, templates) if isinstance(condition, str) else templates if condition else []


def swiglu(prefix: str = "model.layers.{L}.mlp", ffn: str = "ffn", bias: bool | str = MLP_BIAS) -> list:
    return [*linear(f"{prefix}.gate_proj", ffn, "hidden", bias), *linear(f"{prefix}.up_proj", ffn, "hidden", bias),
            *linear(f"{prefix}.down_proj", "hidden", ffn, bias)]


LAYER_NORMS = (*norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.post_attention_layernorm"))


def decoder(cls: str, layer: tuple | None = None, head: tuple = HEAD) -> Tensors:
    """The tensors of a Llama-shaped `cls`: Llama's own layer, or `layer`, between the embedding and the head."""
    return Tensors(EMBED, layer or (*attention(), *swiglu(), *LAYER_NORMS), head, TIED, prefix="model", classes=(cls,))


TENSORS = decoder("LlamaForCausalLM")
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, rms_norm_eps=1e-5)

SPEC = register_architecture(ArchitectureSpec(
    model_type="llama",
    tensors=TENSORS,
    onnx="decoder",
    gguf=GGUFMapping(arch="LLAMA", rules=PERMUTE_QK, extra_tensors=llama3_rope_factors),
    tiny=dict(TINY, tie_word_embeddings=False),
))
