"""gpt-oss (OpenAI): attention with biases and per-head sinks, alternating sliding-window and full layers,
YaRN rope, and every layer a mixture of experts whose SwiGLU is clamped ("swiglu_oai").

Its experts are saved fused, three axes each (experts, in, out): gate and up interleaved in one
`gate_up_proj`, which llama.cpp takes apart into `ffn_gate_exps` and `ffn_up_exps` (out, in). The
checkpoints OpenAI publishes store those experts as MXFP4 blocks and scales: formats/quantized/mxfp4.py
reads them as these tensors (and a float GGUF keeps their blocks).
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, split
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Transpose
from ..tensors import linear, t
from .llama import LAYER_NORMS, TINY, attention, decoder
from .moe import NO_EXPERT_ONNX

P = "model.layers.{L}.mlp"
LAYER = (t("model.layers.{L}.self_attn.sinks", "heads"), *attention(qkv_bias=True, o_bias=True),
         *linear(f"{P}.router", "experts", "hidden", bias=True),
         t(f"{P}.experts.gate_up_proj", "experts", "hidden", "2 * ffn"),
         t(f"{P}.experts.gate_up_proj_bias", "experts", "2 * ffn"),
         t(f"{P}.experts.down_proj", "experts", "ffn", "hidden"),
         t(f"{P}.experts.down_proj_bias", "experts", "hidden"),
         *LAYER_NORMS)
ALTERNATING = "[('sliding_attention' if i % 2 == 0 else 'full_attention') for i in range(layers)]"

SPEC = register_architecture(ArchitectureSpec(
    model_type="gpt_oss",
    tensors=decoder("GptOssForCausalLM", LAYER),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(
        arch="GPT_OSS",
        metadata={**TEXT_KEYS, "{arch}.attention.sliding_window": Key("sliding_window"),
                  "{arch}.expert_feed_forward_length": Key("ffn")},
        rules=(Transpose((".experts.gate_up_proj", ".experts.down_proj")),),
        names={"model.layers.{L}.self_attn.sinks": "blk.{L}.attn_sinks.weight",
               f"{P}.experts.down_proj": "blk.{L}.ffn_down_exps.weight",
               f"{P}.experts.down_proj_bias": "blk.{L}.ffn_down_exps.bias"},
        splits={f"{P}.experts.gate_up_proj": split("blk.{L}.ffn_gate_exps.weight", "blk.{L}.ffn_up_exps.weight",
                                                   interleaved=True),
                f"{P}.experts.gate_up_proj_bias": split("blk.{L}.ffn_gate_exps.bias", "blk.{L}.ffn_up_exps.bias",
                                                        interleaved=True)},
        requires={f"get('layer_types') is None or layer_types == {ALTERNATING}":
                  "its layers alternate sliding-window and full attention, sliding first"},
    ),
    note="MXFP4 checkpoints (as published) too: the experts stay MXFP4 in an f32/f16/bf16 GGUF",
    tiny=dict(TINY, num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, head_dim=16,
              sliding_window=4, tie_word_embeddings=False,
              rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 2.0, "beta_fast": 32.0,
                               "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 256}),
))
