"""State-space and hybrid families: what the registry-generated tests do not cover.

Quantized files equal llama.cpp's own (llama-quantize keeps conv kernels and state tensors in F32), a
recurrent model verifies in llama.cpp prompt after prompt (its state reset for each), `A_log`
comes back from llama.cpp's `A = -exp(A_log)` within float32 rounding, and both Granite 4 hybrids' files
(with experts, and dense) are what llama.cpp's converter writes.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from test_gguf_quantization import _tensors, equal_to_llama_quantize

import modelport
from modelport.architectures import spec_for

WIDE = dict(hidden_size=256, num_hidden_layers=4)
GRANITE_WIDE = dict(intermediate_size=256, shared_intermediate_size=256, mamba_n_heads=16, mamba_d_head=32,
                    mamba_d_state=32, layer_types=["mamba", "attention", "mamba", "mamba"])
NEMOTRON_H_MOE = spec_for({"model_type": "nemotron_h"}).variant("moe").tiny


@pytest.mark.slow
@pytest.mark.parametrize("family,overrides", [
    ("mamba", dict(time_step_rank=16)),                     # dt_proj rows of 16 fall back to F16
    ("falcon_mamba", dict(time_step_rank=32)),
    ("mamba2", dict(num_heads=16, head_dim=32, n_groups=2, state_size=32)),
    ("lfm2", dict(intermediate_size=768, block_multiple_of=256, layer_types=["conv", "full_attention"] * 2)),
    ("granitemoehybrid", GRANITE_WIDE),
    pytest.param("granitemoehybrid", dict(GRANITE_WIDE, num_local_experts=0, num_experts_per_tok=0),
                 id="granitemoehybrid-dense"),                  # the shared MLP as llama.cpp's plain FFN
    ("nemotron_h", dict(intermediate_size=512, mamba_num_heads=16, mamba_head_dim=32, ssm_state_size=32, head_dim=64,
                        layers_block_type=["mamba", "mlp", "attention", "mlp"])),
    # Nemotron-H MoE (NEMOTRON_H_MOE): experts in a latent space, a shared expert, Mamba and attention layers
    ("nemotron_h", dict(NEMOTRON_H_MOE, mamba_num_heads=16, mamba_head_dim=32, ssm_state_size=32, head_dim=64,
                        moe_intermediate_size=256, moe_shared_expert_intermediate_size=512, moe_latent_size=256)),
    ("bamba", dict(intermediate_size=512, mamba_n_heads=16, mamba_d_head=32, mamba_d_state=32, attn_layer_indices=[2])),
    ("jamba", dict(intermediate_size=256, mamba_dt_rank="auto", mamba_d_state=16)),
    pytest.param("jamba", dict(intermediate_size=256, mamba_dt_rank="auto", mamba_d_state=16, num_experts=1),
                 id="jamba-dense"),                             # no routers: every layer llama.cpp's plain FFN
    ("lfm2_moe", dict(intermediate_size=512, moe_intermediate_size=256, layer_types=["conv", "full_attention"] * 2)),
    ("qwen3_next", dict(moe_intermediate_size=256, shared_expert_intermediate_size=256, head_dim=64,
                        linear_key_head_dim=64, linear_value_head_dim=64,
                        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"])),
    ("falcon_h1", dict(intermediate_size=512, head_dim=64, mamba_d_ssm=512, mamba_n_heads=16, mamba_d_head=32,
                       mamba_d_state=32)),
    ("kimi_linear", dict(intermediate_size=512, moe_intermediate_size=256, linear_head_dim=64, kv_lora_rank=256,
                         qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64,
                         layer_types=["linear_attention", "full_attention"] * 2,
                         mlp_layer_types=["dense", "sparse", "sparse", "sparse"])),
], ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("quant", ["q4_k_m", "q8_0"])
def test_state_space_families_quantize_like_llama_quantize(tmp_path, family, overrides, quant):
    mine = equal_to_llama_quantize(tmp_path, family, {**WIDE, **overrides}, quant)
    conv = [n for n in mine if "conv1d" in n or "shortconv.conv" in n]
    assert conv and all(mine[n][0] == "F32" for n in conv)


def test_recurrent_state_is_reset_for_each_sequence(samples, tmp_path):
    """llama.cpp's recurrent state is reset for each sequence (no KV cache to trim): a prompt evaluated after
    other prompts and a generation gives exactly the logits it gives first thing."""
    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    sample = samples("mamba")
    out = tmp_path / "m.gguf"
    modelport.convert(sample.path, out, quant="f32")
    runtime = LlamaCppRuntime(out)
    first = runtime.logits(list(range(5, 40)))
    runtime.logits(list(range(50, 90)))
    runtime.greedy(list(range(7, 20)), 4)
    np.testing.assert_array_equal(runtime.logits(list(range(5, 40))), first)


@pytest.mark.slow
# a state-space scan, a gated delta net, KDA beside a latent-attention cache
@pytest.mark.parametrize("family", ["mamba2", "qwen3_next", "kimi_linear"])
def test_recurrent_model_verifies_with_corpus_statistics(samples, tmp_path, family):
    sample = samples(family)
    out = tmp_path / "m.gguf"
    modelport.convert(sample.path, out, quant="f32")
    run = run_cli("verify", sample.path, out, "--corpus", "builtin", "--ctx", "64", "--tokens", "256",
                  "--generate", "4", "--json")
    assert run.code == 0, run.stderr
    report = run.json()
    assert report["ok"] and report["quality"], report
    assert report["metrics"]["max_abs_diff"] < 1e-3, report["metrics"]


def test_a_log_comes_back_within_float_rounding(samples, tmp_path):
    """A = -exp(A_log) in the file; GGUF -> HF gives A_log back within float32 rounding (not bit for bit)."""
    import gguf
    from safetensors.numpy import load_file
    sample = samples("mamba")
    modelport.convert(sample.path, tmp_path / "m.gguf", quant="f32")
    a = next(t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors if t.name == "blk.0.ssm_a")
    a_log = sample.model.backbone.layers[0].mixer.A_log.detach().numpy()
    np.testing.assert_array_equal(np.asarray(a.data).reshape(a_log.shape), -np.exp(a_log))
    modelport.convert(tmp_path / "m.gguf", tmp_path / "hf", base_model=sample.path)
    back = load_file(tmp_path / "hf" / "model.safetensors")["backbone.layers.0.mixer.A_log"]
    np.testing.assert_allclose(back, a_log, rtol=0, atol=1e-6)


# where a Granite hybrid's file may differ from llama.cpp's converter's, and why: it drops head_dim (the
# lengths llama.cpp computes anyway), gives a hybrid without rope a context of 2**20 (modelport writes the
# config's max_position_embeddings, which a config rebuilt from the file gets back), and writes no add_*_token
CONVERTER_OWN_KEYS = ("granitehybrid.attention.key_length", "granitehybrid.attention.value_length",
                      "granitehybrid.context_length", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["granitemoehybrid", "granitemoehybrid-dense"])
def test_granite_hybrid_is_what_llama_cpps_converter_writes(samples, tmp_path, name):
    """Both Granite 4 hybrids as llama.cpp's converter writes them: the dense one (granite-4.0-h-micro's
    kind) with shared_mlp's input_linear cut into ffn_gate and ffn_up, output_linear as ffn_down and expert
    counts 0; the same tensors, types and bytes (A = -exp(A_log) within float32 rounding: two exps). The
    converter reads only the layer kinds IBM's configs spell ("mamba", "attention"), not transformers 5's,
    so the copy it is given says so."""
    import json
    import shutil

    from test_gguf_source import same_as_converter

    source = tmp_path / "source"
    shutil.copytree(samples(name).path, source)
    config = json.loads((source / "config.json").read_text())
    config["layer_types"] = ["mamba" if k == "linear_attention" else "attention" for k in config["layer_types"]]
    (source / "config.json").write_text(json.dumps(config))
    modelport.convert(source, tmp_path / "ours.gguf", quant="f32")
    mine, theirs = same_as_converter(tmp_path / "ours.gguf", source, tmp_path / "ref.gguf", CONVERTER_OWN_KEYS)
    assert mine.fields["granitehybrid.expert_count"].contents() == config["num_local_experts"]
    assert ("blk.0.ffn_gate.weight" in {t.name for t in theirs.tensors}) == (config["num_local_experts"] == 0)


@pytest.mark.parametrize("family,why", [("mamba", "state-space cache"), ("lfm2", "recurrent cache layer"),
                                        ("mixtral", "expert dispatch")])
def test_onnx_is_refused_with_the_reason(samples, tmp_path, family, why):
    """Families torch.onnx cannot export (recurrent caches, transformers' expert dispatch) are refused before
    any export starts: one line naming the source, nothing written."""
    run = run_cli("convert", samples(family).path, tmp_path / "m.onnx")
    assert run.code == 1 and f"no ONNX export for {family!r}" in run.stderr and why in run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("family,overrides,why", [
    ("falcon_h1", dict(mamba_norm_before_gate=True), "before its grouped norm"),
    ("granitemoehybrid", dict(num_local_experts=0, intermediate_size=32), "must equal shared_intermediate_size"),
], ids=["falcon_h1", "granitemoehybrid-dense"])
def test_what_llama_cpp_computes_otherwise_is_refused_before_writing(tmp_path, family, overrides, why):
    """A config llama.cpp's graph would compute otherwise is refused, with the reason, and nothing is written:
    llama.cpp gates Falcon-H1's Mamba-2 output before its grouped norm, and sizes a dense Granite hybrid's
    MLP by intermediate_size, not the shared_intermediate_size transformers sizes it by."""
    from modelport.samples import save_model
    save_model(tmp_path / "model", family, **overrides)
    run = run_cli("convert", tmp_path / "model", tmp_path / "m.gguf", "--quant", "f32")
    assert run.code == 1 and why in run.stderr, run.stderr
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["kimi_linear", "qwen3_next"])
def test_linear_attention_epsilon_is_the_same_function_on_long_queries(tmp_path, family):
    """llama.cpp L2-normalises the linear attention's q and k with rms_norm_eps as epsilon, transformers
    with 1e-6. At the released Kimi Linear's 1e-5 the two differ on a random tiny model, whose q and k are
    far shorter than a trained model's; with its q and k projections 30 times larger they agree."""
    import torch

    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    from modelport.samples import save_model
    from modelport.verify.prompts import PROMPTS
    model, tok = save_model(tmp_path / "model", family, rms_norm_eps=1e-5)
    attention = "self_attn" if family == "kimi_linear" else "linear_attn"
    with torch.no_grad():
        for kind, layer in zip(model.config.layer_types, model.model.layers):
            if kind == "linear_attention":
                for name, weight in getattr(layer, attention).named_parameters():
                    if name.split(".")[0] in ("q_proj", "k_proj", "in_proj_qkvz"):
                        weight.mul_(30)
        model.save_pretrained(tmp_path / "model")
        prompts = [tok(text)["input_ids"] for text in PROMPTS[:3]]
        want = [model(torch.tensor([ids])).logits[0].numpy() for ids in prompts]
    modelport.convert(tmp_path / "model", tmp_path / "m.gguf", quant="f32")
    runtime = LlamaCppRuntime(tmp_path / "m.gguf")
    assert max(np.abs(runtime.logits(ids) - w).max() for ids, w in zip(prompts, want)) < 1e-3


@pytest.mark.slow
def test_lfm2_moe_selection_bias_routes_in_llama_cpp(tmp_path):
    """LFM2-MoE's `expert_bias` (zero in a random model, so the family test cannot see it) changes which
    experts are chosen; with a large random one, llama.cpp's logits still equal transformers'."""
    import torch

    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    from modelport.samples import save_model
    from modelport.verify.prompts import PROMPTS
    model, tok = save_model(tmp_path / "model", "lfm2_moe")
    prompts = [tok(text)["input_ids"] for text in PROMPTS[:3]]

    def logits() -> list:
        with torch.no_grad():
            return [model(torch.tensor([ids])).logits[0].numpy() for ids in prompts]
    unbiased = logits()
    with torch.no_grad():
        for layer in model.model.layers[model.config.num_dense_layers:]:
            layer.feed_forward.expert_bias.copy_(torch.randn_like(layer.feed_forward.expert_bias))
    biased = logits()
    assert max(np.abs(a - b).max() for a, b in zip(biased, unbiased)) > 1e-2       # the bias does route
    model.save_pretrained(tmp_path / "model")
    modelport.convert(tmp_path / "model", tmp_path / "m.gguf", quant="f32")
    runtime = LlamaCppRuntime(tmp_path / "m.gguf")
    assert max(np.abs(runtime.logits(ids) - want).max() for ids, want in zip(prompts, biased)) < 1e-3


@pytest.mark.parametrize("overrides,reason", [
    (dict(layers_block_type=["mamba", "moe", "attention", "mlp"]), "every feed-forward layer routed experts"),
    (dict(mlp_bias=True), "have no bias"),
])
def test_nemotron_h_moe_is_its_own_arch_and_refuses_what_it_cannot_run(overrides, reason):
    """A 'moe' layer makes the config NEMOTRON_H_MOE (the dense tiny config stays NEMOTRON_H); what that
    arch cannot compute is refused with the reason."""
    from modelport.architectures.hparams import hparams
    family = spec_for({"model_type": "nemotron_h"})
    dense = {"model_type": "nemotron_h", "vocab_size": 96, **family.tiny}
    moe = {**dense, **NEMOTRON_H_MOE}
    assert family.for_config(dense).gguf.arch == "NEMOTRON_H"
    mapping = family.for_config(moe).gguf
    assert mapping.arch == "NEMOTRON_H_MOE" and mapping.unmet(hparams(moe)) == []
    assert any(reason in why for why in mapping.unmet(hparams({**moe, **overrides})))


def test_nemotron_h_moe_experts_stream_a_row_block_at_a_time(samples, tmp_path, monkeypatch):
    """Nemotron-H MoE's experts are stacked into `ffn_*_exps` as every MoE family's are: expert by expert,
    a row block at a time; the file written in small blocks has the same bytes."""
    from modelport.formats.gguf import writer
    sample = samples("nemotron_h-moe")
    modelport.convert(sample.path, tmp_path / "whole.gguf", quant="q8_0")
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 1024)        # 8 rows of 32 floats
    bundle = modelport.load(sample.path)
    mapping, hp = writer.mapping_for(bundle), writer.hparams(bundle.config)
    up = next(p for p in writer.plan(bundle, mapping, hp, "q8_0") if p.gguf_name == "blk.1.ffn_up_exps.weight")
    assert len(up.sources) == 4 and len(writer.pieces(up, hp)) == 4 * 4
    modelport.convert(sample.path, tmp_path / "chunked.gguf", quant="q8_0")
    assert _tensors(tmp_path / "whole.gguf") == _tensors(tmp_path / "chunked.gguf")


def test_a_table_no_inverse_can_read_is_one_line(samples, tmp_path):
    """A Jamba GGUF whose per-layer KV head counts say no layer has attention (while its tensors say
    otherwise): the config cannot be read back from it, which is one line naming the value, not a crash."""
    from gguf_faults import rewrite
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    modelport.convert(samples("jamba").path, good, quant="f32")
    rewrite(good, bad, fields=lambda values: values.update({"jamba.attention.head_count_kv": [0, 0, 0, 0]}))
    run = run_cli("convert", bad, tmp_path / "hf")
    assert run.code in (1, 2) and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "attn_layer_offset cannot be read back" in run.stderr and "bad.gguf" in run.stderr
    assert not (tmp_path / "hf").exists()
