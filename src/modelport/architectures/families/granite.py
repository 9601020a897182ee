"""Granite (IBM): Llama's tensors with scaled embeddings, residuals, attention and logits (the multipliers
are metadata); llama.cpp runs it with interleaved rope, so Q/K are permuted as for Llama.

Granite MoE keeps each layer's experts in two 3-D tensors (JetMoE's parallel experts): `input_linear`
holds every expert's gate over its up, which llama.cpp takes apart; `output_linear` is already its
`ffn_down_exps`. Granite MoE Shared adds a dense shared expert fused the same way.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, split
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import linear, t
from .llama import LAYER_NORMS, PERMUTE_QK, TINY, attention, decoder
from .moe import NO_EXPERT_ONNX

MULTIPLIER_KEYS = {
    "{arch}.attention.scale": Key("attention_multiplier", "f32", when="get('attention_multiplier')"),
    "{arch}.embedding_scale": Key("embedding_multiplier", "f32", when="get('embedding_multiplier')"),
    "{arch}.residual_scale": Key("residual_multiplier", "f32", when="get('residual_multiplier')"),
    "{arch}.logit_scale": Key("logits_scaling", "f32", when="get('logits_scaling')"),
}

SPEC = register_architecture(ArchitectureSpec(
    model_type="granite",
    tensors=decoder("GraniteForCausalLM"),
    onnx="decoder",
    gguf=GGUFMapping(arch="GRANITE", metadata={**TEXT_KEYS, **MULTIPLIER_KEYS}, rules=PERMUTE_QK),
    tiny=dict(TINY, attention_multiplier=0.25, embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=4.0),
))


P = "model.layers.{L}.block_sparse_moe"
SHARED = "model.layers.{L}.shared_mlp"
EXPERTS = (t(f"{P}.output_linear.weight", "experts", "hidden", "ffn"),
           t(f"{P}.input_linear.weight", "experts", "2 * ffn", "hidden"),
           t(f"{P}.router.layer.weight", "experts", "hidden"))
TINY_MOE = dict(TINY, num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, attention_multiplier=0.25,
                embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=4.0, tie_word_embeddings=False)


def moe_mapping(shared: bool) -> GGUFMapping:
    parts = {f"{P}.input_linear.weight": split("blk.{L}.ffn_gate_exps.weight", "blk.{L}.ffn_up_exps.weight", axis=-2)}
    if shared:
        parts[f"{SHARED}.input_linear.weight"] = split("blk.{L}.ffn_gate_shexp.weight", "blk.{L}.ffn_up_shexp.weight",
                                                       axis=-2)
    return GGUFMapping(
        arch="GRANITE_MOE", rules=PERMUTE_QK, splits=parts,
        metadata={**TEXT_KEYS, **MULTIPLIER_KEYS,
                  "{arch}.expert_shared_feed_forward_length": Key("shared_intermediate_size", when="get('shared_intermediate_size')")},
        names={f"{P}.output_linear.weight": "blk.{L}.ffn_down_exps.weight",
               f"{SHARED}.output_linear.weight": "blk.{L}.ffn_down_shexp.weight"})


MOE = register_architecture(ArchitectureSpec(
    model_type="granitemoe",
    tensors=decoder("GraniteMoeForCausalLM", (*EXPERTS, *LAYER_NORMS, *attention())),
    no_onnx=NO_EXPERT_ONNX,
    gguf=moe_mapping(shared=False),
    tiny=TINY_MOE,
))
MOE_SHARED = register_architecture(ArchitectureSpec(
    model_type="granitemoeshared",
    tensors=decoder("GraniteMoeSharedForCausalLM", (
        *EXPERTS, *LAYER_NORMS, *attention(),
        *linear(f"{SHARED}.input_linear", "2 * shared_intermediate_size", "hidden"),
        *linear(f"{SHARED}.output_linear", "hidden", "shared_intermediate_size"))),
    no_onnx=NO_EXPERT_ONNX,
    gguf=moe_mapping(shared=True),
    tiny=dict(TINY_MOE, shared_intermediate_size=64),
))
