"""The newest plain decoders (issue 28): what the registry-generated tests do not cover.

Quantized files equal llama.cpp's own (llama_model_quantize from our F32 file, tensor for tensor), and
the configs llama.cpp would run as another function are refused, with the reason, before anything is
written.
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import run_cli
from test_gguf_quantization import equal_to_llama_quantize

from modelport.architectures import spec_for
from modelport.architectures.hparams import hparams

LLAMA3 = {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0, "original_max_position_embeddings": 64,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0}
WIDE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=64)


@pytest.mark.slow
@pytest.mark.parametrize("family,overrides,tensor", [
    ("hunyuan_v1_moe", dict(num_experts=4, moe_topk=2), "blk.0.ffn_up_exps.weight"),   # beside a shared MLP
    ("apertus", dict(rope_parameters=LLAMA3), "rope_freqs.weight"),     # its default rope; xIELU as metadata
    ("minimax_m2", dict(num_local_experts=4, rotary_dim=32), "blk.0.exp_probs_b.bias"),
    ("afmoe", dict(num_experts=4, moe_intermediate_size=256), "blk.1.ffn_gate_shexp.weight"),   # a dense layer first
    ("bitnet", dict(), "blk.0.ffn_sub_norm.weight"),                    # ffn_sub_norm's rows of 256
    ("gemma3n_text", dict(num_hidden_layers=22, num_kv_shared_layers=2),  # stacked AltUp projections kept F32,
     "per_layer_token_embd.weight"),                                     # the per-layer table quantized as token_embd
], ids=lambda v: v if isinstance(v, str) and "." not in v else "")
@pytest.mark.parametrize("quant", ["q4_k_m", "q8_0"])
def test_newest_decoders_quantize_like_llama_quantize(tmp_path, family, overrides, tensor, quant):
    mine = equal_to_llama_quantize(tmp_path, family, {**WIDE, **overrides}, quant)
    assert tensor in mine
    ours, theirs = (gguf.GGUFReader(tmp_path / name) for name in ("ours.gguf", "ref.gguf"))
    assert {k: f.contents() for k, f in ours.fields.items() if not k.startswith("general.")} == \
        {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("general.")}


@pytest.mark.slow
def test_xielu_parameters_are_per_layer_metadata_and_come_back(samples, tmp_path):
    """Apertus: each layer's raw xIELU parameters are the `xielu.*` arrays llama.cpp reads (converter's
    layout), and GGUF -> HF gives the tensors back bit for bit."""
    from safetensors.numpy import load_file

    import modelport
    sample = samples("apertus")
    modelport.convert(sample.path, tmp_path / "m.gguf", quant="f32")
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    source = load_file(sample.path / "model.safetensors")
    layers = sample.model.config.num_hidden_layers
    for name in ("alpha_p", "alpha_n", "beta", "eps"):
        values = [source[f"model.layers.{L}.mlp.act_fn.{name}"].reshape(-1)[0] for L in range(layers)]
        assert fields[f"xielu.{name}"].contents() == [float(np.float32(v)) for v in values], name
    assert len(set(fields["xielu.alpha_p"].contents())) == layers          # varied per layer by the sample
    modelport.convert(tmp_path / "m.gguf", tmp_path / "hf")
    back = load_file(tmp_path / "hf" / "model.safetensors")
    assert all(np.array_equal(back[n], source[n]) and back[n].shape == source[n].shape for n in source if "act_fn" in n)


REFUSED = [
    ("hunyuan_v1_moe", dict(moe_topk=[2, 1]), "same number of experts"),
    ("afmoe", dict(mup_enabled=False), "sqrt(hidden_size)"),
    ("afmoe", dict(layer_types=["sliding_attention", "full_attention"] * 2), "three sliding-window layers"),
    ("bitnet", dict(hidden_act="relu2"), "SwiGLU"),
    ("bitnet", dict(tie_word_embeddings=False), "tied head"),
    ("gemma3n_text", dict(altup_num_inputs=2), "altup_num_inputs must be 4"),
    ("gemma3n_text", dict(altup_active_idx=1), "altup_active_idx must be 0"),
    ("gemma3n_text", dict(altup_correct_scale=False), "altup_correct_scale must be true"),
    ("gemma3n_text", dict(laurel_rank=32), "laurel_rank must be 64"),
    ("gemma3n_text", dict(hidden_size_per_layer_input=128), "hidden_size_per_layer_input must be 256"),
    ("gemma3n_text", dict(activation_sparsity_pattern=[0.95] * 12 + [0.0] * 13), "activation_sparsity_pattern must"),
    ("gemma3n_text", dict(num_kv_shared_layers=4), "num_hidden_layers - num_kv_shared_layers must be 20"),
    ("gemma3n_text", dict(layer_types=["sliding_attention"] * 18 + ["full_attention"] * 7), "layer_types[18:20] must"),
    ("gemma3n_text", dict(hidden_activation="gelu"), "hidden_activation must be gelu_pytorch_tanh"),
    ("gemma3n_text", dict(final_logit_softcapping=None), "final_logit_softcapping must be set"),
    ("gemma3n_text", dict(attention_bias=True), "attention_bias must be false"),
    ("gemma3n_text", dict(vocab_size_per_layer_input=128), "vocab_size_per_layer_input must not exceed"),
]


@pytest.mark.parametrize("family,overrides,reason", REFUSED, ids=[f"{r[0]}-{r[2][:12]}" for r in REFUSED])
def test_what_llama_cpp_hard_codes_is_required(family, overrides, reason):
    spec = spec_for({"model_type": family})
    config = {"model_type": family, "vocab_size": 96, **spec.tiny}
    assert spec.gguf.unmet(hparams(config)) == []
    assert any(reason in why for why in spec.gguf.unmet(hparams({**config, **overrides})))


def test_a_refused_config_writes_nothing(tmp_path):
    """convert exits 1 naming the model and what llama.cpp assumes; no file appears."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from modelport.architectures.expected import expected_tensors
    family, overrides, reason = REFUSED[0]
    spec = spec_for({"model_type": family})
    config = {"model_type": family, "vocab_size": 96, **spec.tiny, **overrides}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    save_file({n: np.zeros(s, np.float32) for n, s in expected_tensors(spec, config).shapes.items()},
              tmp_path / "m" / "model.safetensors")
    run = run_cli("convert", tmp_path / "m", tmp_path / "m.gguf")
    assert run.code == 1 and reason in run.stderr and str(tmp_path / "m") in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
