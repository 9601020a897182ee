"""Gemma 3n's text model (Gemma3nForCausalLM): AltUp, LAuReL, per-layer embeddings and KV sharing.

Each layer runs on the first of four AltUp streams (predicted from all four, then corrected), beside a
low-rank LAuReL residual, and adds a per-layer input: a slice of a second, per-layer token embedding
plus a projection of the first. The last `num_kv_shared_layers` layers read the keys and values of the
last earlier layer of their kind. Norms scale by w (no 1 + w here). llama.cpp's GEMMA3N reads the
sliding-window pattern, feed-forward widths and sizes from the file and hard-codes the rest (`requires`).

- The three AltUp projections (and the three that undo them) are stacked into one 3-D tensor each
  (`stacks`), as llama.cpp's converter does.
- llama.cpp wants a per-layer embedding row for every token. transformers looks an id beyond a smaller
  table (`vocab_size_per_layer_input`) up as id 0, so the table is extended with copies of row 0
  (`rules.PadRows`). llama.cpp's converter pads zeros: the same file when row 0 is the padding token's,
  which transformers keeps at zero (Gemma's pad id is 0), another function on those ids otherwise.
- llama.cpp loads K and V projections and a K norm for every layer, though from layer 20 on it never uses
  them; transformers 5 has none there (nor saves them), so zeros stand in (`extra_tensors`).
- llama.cpp cuts activations at mean + 1.645 std with the sample std (n - 1), transformers with the
  population std (n), and its GELU reads an fp16 table: on the tiny model (128-wide MLP) its logits are
  3.9e-2 from transformers' (`tolerance` 0.1); with transformers' cut and GELU made llama.cpp's, 2.8e-4
  (tests/test_gemma3n.py). The wider a real model's MLP, the nearer n - 1 is to n.
- The file's metadata is the converter's, plus `vocab_size`, from which a config rebuilt without the
  source takes `vocab_size_per_layer_input` (the extended table: the same function).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..gguf_mapping import ROPE_SCALING_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import PadRows
from ..tensors import Tensors, linear, norm, only, t
from .gemma import HEAD_DIM_KEYS, SANDWICH, SOFTCAP_KEYS
from .llama import ATTENTION_BIAS, EMBED, HEAD, TIED, TINY, swiglu

if TYPE_CHECKING:
    import numpy as np

    from ..hparams import HParams

KV_LAYERS = "layers - get('num_kv_shared_layers', 15)"       # the layers with keys and values of their own
LAYER_TYPES = ("get('layer_types', ['full_attention' if (i + 1) % 5 == 0 else 'sliding_attention' "
               "for i in range(layers)])")
SPARSITY = "get('activation_sparsity_pattern', [0.95 if i < 10 and layers > 10 else 0.0 for i in range(layers)])"
ALTUP = "get('altup_num_inputs', 4)"
PER_LAYER = "get('hidden_size_per_layer_input', 256)"
RANK = "get('laurel_rank', 64)"
A, L = "model.layers.{L}.self_attn", "model.layers.{L}"

LAYER = (
    *linear(f"{A}.q_proj", "heads * head_dim", "hidden", ATTENTION_BIAS), *norm(f"{A}.q_norm", "head_dim"),
    *only(f"L < {KV_LAYERS}", [*linear(f"{A}.k_proj", "kv_heads * head_dim", "hidden", ATTENTION_BIAS),
                               *linear(f"{A}.v_proj", "kv_heads * head_dim", "hidden", ATTENTION_BIAS),
                               *norm(f"{A}.k_norm", "head_dim")]),
    *linear(f"{A}.o_proj", "hidden", "heads * head_dim", ATTENTION_BIAS),
    *swiglu(f"{L}.mlp", "per_layer(intermediate_size, layers)[L]", bias=False),
    *SANDWICH,
    t(f"{L}.altup.correct_output_scale", "hidden"),
    t(f"{L}.altup.correction_coefs.weight", ALTUP, ALTUP),
    t(f"{L}.altup.prediction_coefs.weight", f"{ALTUP} ** 2", ALTUP),
    t(f"{L}.altup.modality_router.weight", ALTUP, "hidden"),
    *norm(f"{L}.altup.router_norm"),
    t(f"{L}.laurel.linear_left.weight", RANK, "hidden"), t(f"{L}.laurel.linear_right.weight", "hidden", RANK),
    *norm(f"{L}.laurel.post_laurel_norm"),
    t(f"{L}.per_layer_input_gate.weight", PER_LAYER, "hidden"),
    t(f"{L}.per_layer_projection.weight", "hidden", PER_LAYER),
    *norm(f"{L}.post_per_layer_input_norm"),
)
POST = (
    *norm("model.norm"),
    t("model.embed_tokens_per_layer.weight", "get('vocab_size_per_layer_input', 262144)", f"layers * {PER_LAYER}"),
    t("model.per_layer_model_projection.weight", f"layers * {PER_LAYER}", "hidden"),
    *norm("model.per_layer_projection_norm", PER_LAYER),
    t("model.altup_projections.{E}.weight", "hidden", "hidden", count=f"{ALTUP} - 1"),
    t("model.altup_unembed_projections.{E}.weight", "hidden", "hidden", count=f"{ALTUP} - 1"),
    HEAD[-1],
)

METADATA = {
    "{arch}.block_count": Key("layers"),
    "{arch}.context_length": Key("ctx"),
    "{arch}.embedding_length": Key("hidden"),
    "{arch}.feed_forward_length": Key("per_layer(intermediate_size, layers)", "array",
                                      inverse=(("intermediate_size", "value"),)),
    "{arch}.attention.head_count": Key("heads"),
    "{arch}.attention.head_count_kv": Key("kv_heads"),
    **ROPE_SCALING_KEYS,
    "{arch}.rope.freq_base": Key("rope_theta", "f32"),
    "{arch}.rope.freq_base_swa": Key("rope_theta_swa", "f32", when="rope_theta_swa is not None"),
    "{arch}.attention.layer_norm_rms_epsilon": Key("rms_eps if rms_eps is not None else 1e-6", "f32"),
    **HEAD_DIM_KEYS,
    **SOFTCAP_KEYS,
    "{arch}.altup.active_idx": Key("get('altup_active_idx', 0)"),
    "{arch}.altup.num_inputs": Key(ALTUP),
    "{arch}.embedding_length_per_layer_input": Key(PER_LAYER),
    "{arch}.attention.shared_kv_layers": Key("get('num_kv_shared_layers', 15)"),
    # llama.cpp's only two sparsities are 0.95 and none (`requires`), so the sign of the cut-off says which
    "{arch}.activation_sparsity_scale": Key(f"[normal_ppf(s) for s in {SPARSITY}]", "array", inverse=(
        ("activation_sparsity_pattern", "[0.95 if v > 0 else 0.0 for v in value]"),)),
    "{arch}.attention.sliding_window_pattern": Key(f"[t == 'sliding_attention' for t in {LAYER_TYPES}]", "array",
                                                   inverse=(("layer_types", "['sliding_attention' if v else "
                                                                            "'full_attention' for v in value]"),)),
    # the per-layer table, extended, has a row for every token: a config rebuilt from the file says so
    "{arch}.vocab_size": Key("vocab", inverse=(("vocab_size", "value"), ("vocab_size_per_layer_input", "value"))),
}

G = "llama.cpp's GEMMA3N"
REQUIRES = {
    f"{ALTUP} == 4": f"altup_num_inputs must be 4: {G} hard-codes 4 AltUp inputs",
    "get('altup_active_idx', 0) == 0": f"altup_active_idx must be 0: {G} hard-codes the first AltUp input as the "
                                       "active one",
    "get('altup_correct_scale', True)": f"altup_correct_scale must be true: {G} always scales the corrected AltUp "
                                        "output",
    f"{RANK} == 64": f"laurel_rank must be 64: {G} hard-codes a LAuReL rank of 64",
    f"{PER_LAYER} == 256": f"hidden_size_per_layer_input must be 256: {G} hard-codes 256 per-layer input dimensions",
    f"{SPARSITY} == [0.95 if i < 10 else 0.0 for i in range(layers)]":
        f"activation_sparsity_pattern must be 0.95 in exactly the first 10 layers and 0 after: {G} hard-codes it",
    f"{KV_LAYERS} == min(layers, 20)": f"num_hidden_layers - num_kv_shared_layers must be 20 (num_kv_shared_layers "
                                       f"0 below 20 layers): {G} shares keys and values from layer 20 on",
    f"{KV_LAYERS} >= layers or ({LAYER_TYPES}[19] == 'full_attention' and {LAYER_TYPES}[18] == 'sliding_attention')":
        f"layer_types[18:20] must be sliding_attention, full_attention: {G} gives the shared layers layer 18's keys "
        "and values (sliding window) and layer 19's (full attention)",
    "get('hidden_activation', 'gelu_pytorch_tanh') == 'gelu_pytorch_tanh'":
        f"hidden_activation must be gelu_pytorch_tanh: {G} runs the tanh GELU",
    "get('final_logit_softcapping', 30.0) is not None": f"final_logit_softcapping must be set: {G} always soft-caps "
                                                        "the logits (at 30 when the file says nothing)",
    f"not {ATTENTION_BIAS}": f"attention_bias must be false: {G} drops the attention output's bias",
    "get('vocab_size_per_layer_input', 262144) <= vocab": "vocab_size_per_layer_input must not exceed vocab_size: "
                                                           "llama.cpp reads one per-layer embedding row per token",
}


def shared_kv_placeholders(hp: "HParams") -> dict[str, "np.ndarray"]:
    """Zero K and V projections and K norms for the layers that share earlier ones' keys and values: llama.cpp
    loads them for every layer (and never reads them from layer 20 on); transformers has none there."""
    import numpy as np
    kv = hp.n_head_kv * hp.head_dim
    out: dict[str, np.ndarray] = {}
    for layer in range(int(hp.eval(KV_LAYERS)), hp.n_layer):
        out[f"blk.{layer}.attn_k.weight"] = np.zeros((kv, hp.n_embd), np.float32)
        out[f"blk.{layer}.attn_v.weight"] = np.zeros((kv, hp.n_embd), np.float32)
        out[f"blk.{layer}.attn_k_norm.weight"] = np.zeros(hp.head_dim, np.float32)
    return out


SPEC = register_architecture(ArchitectureSpec(
    model_type="gemma3n_text",
    tensors=Tensors(EMBED, LAYER, POST, TIED, prefix="model", classes=("Gemma3nForCausalLM",)),
    tie_default=True,
    gguf=GGUFMapping(
        arch="GEMMA3N", metadata=METADATA, requires=REQUIRES, extra_tensors=shared_kv_placeholders,
        tolerance=0.1,          # the sample std and the GELU table (above): 3.9e-2 measured on the tiny model
        runtime_type="F16",     # verify's f32 verdict: the GELU table's precision (mean KL 4.4e-6 on the tiny model)
        stacks={"model.altup_projections.{E}.weight": "altup_proj.weight",
                "model.altup_unembed_projections.{E}.weight": "altup_unembd_proj.weight"},
        names={f"{L}.altup.correct_output_scale": "blk.{L}.altup_correct_scale.weight"},
        rules=(PadRows(("embed_tokens_per_layer.weight",), "vocab", "get('vocab_size_per_layer_input', 262144)"),)),
    note="text model; llama.cpp's activation-sparsity cut takes the sample std and its GELU an fp16 table "
         "(2.8e-4 apart with transformers' made so)",
    no_onnx="torch.onnx has no ONNX function for erf_inv (prims.erf_inv), which transformers' activation-sparsity "
            "cut computes in the graph (Normal(0, 1).icdf)",
    not_layer_major="its decoder looks its per-layer token embeddings up by token id (layer-major feeds it "
                    "embeddings, which would leave them out), and AltUp reads correct_output_scale outside a module "
                    "call",
    tiny=dict(TINY, head_dim=16, num_hidden_layers=25, num_kv_shared_layers=5, sliding_window=8,
              vocab_size_per_layer_input=96),
))
