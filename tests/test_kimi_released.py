"""Kimi Linear's released checkpoint layout (moonshotai/Kimi-Linear-48B-A3B-Instruct, a remote-code folder),
read as transformers 5 reads it: its config's `linear_attn_config` and `first_k_dense_replace` for transformers
5's `layer_types`, `mlp_layer_types` and `linear_*` (the spec's `config_fallbacks`), and its dense MLP under
`mlp.*` for transformers 5's `block_sparse_moe.*` (the templates' `spellings`).

The released folder here is the tiny model transformers 5 saves, rewritten as the released one is laid out:
its config as the remote code's configuration_kimi.py spells it, and its tensors in two shards with an index.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from modelport.architectures import spec_for

# transformers 5's keys the released config spells otherwise (or does not have: qk_head_dim it derives)
T5_ONLY = ("layer_types", "mlp_layer_types", "linear_num_heads", "linear_head_dim", "linear_conv_kernel_dim",
           "qk_head_dim", "head_dim", "output_router_logits", "pretraining_tp")
REMOTE_CODE = {"AutoConfig": "configuration_kimi.KimiLinearConfig", "AutoModel": "modeling_kimi.KimiLinearModel",
               "AutoModelForCausalLM": "modeling_kimi.KimiLinearForCausalLM"}


def released_layout(t5: Path, out: Path, **changes) -> Path:
    """`t5` (a folder transformers 5 saved) as the released checkpoint is laid out: `linear_attn_config` with
    its layers numbered from 1, `first_k_dense_replace`, the remote code's own keys, the dense MLP under
    `mlp.`, two shards and an index. `changes` go into the config last (None deletes a key; a dict for
    `linear_attn_config` replaces it)."""
    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True)
    config = json.loads((t5 / "config.json").read_text())
    layers = config["num_hidden_layers"]
    kinds, mlps = config["layer_types"], config["mlp_layer_types"]
    released = {k: v for k, v in config.items() if k not in T5_ONLY}
    released.update(
        auto_map=REMOTE_CODE,
        linear_attn_config={"kda_layers": [i + 1 for i in range(layers) if kinds[i] == "linear_attention"],
                            "full_attn_layers": [i + 1 for i in range(layers) if kinds[i] == "full_attention"],
                            "num_heads": config["linear_num_heads"], "head_dim": config["linear_head_dim"],
                            "short_conv_kernel_size": config["linear_conv_kernel_dim"]},
        first_k_dense_replace=mlps.index("sparse"), moe_layer_freq=1, moe_router_activation_func="sigmoid",
        use_grouped_topk=True, mla_use_nope=True, num_nextn_predict_layers=0, rope_theta=10000.0,
        rope_scaling=None,
        # the remote config class's own head_dim (hidden // heads, unused by its model); transformers 5 sets it
        # to qk_rope_head_dim instead, whatever the config says
        head_dim=config["hidden_size"] // config["num_attention_heads"])
    for key, value in changes.items():
        if value is None:
            released.pop(key, None)
        else:
            released[key] = value
    (out / "config.json").write_text(json.dumps(released, indent=2))
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(t5 / name, out / name)
    tensors = {re.sub(r"^(model\.layers\.\d+)\.block_sparse_moe\.(gate|up|down)_proj\.", r"\1.mlp.\2_proj.", name):
               array for name, array in load_file(t5 / "model.safetensors").items()}
    shards: dict[str, dict] = {"model-00001-of-00002.safetensors": {}, "model-00002-of-00002.safetensors": {}}
    for name, array in tensors.items():
        first = name.startswith(("model.embed_tokens.", "model.layers.0."))
        shards["model-0000%d-of-00002.safetensors" % (1 if first else 2)][name] = array
    for shard, part in shards.items():
        save_file(part, out / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: s for s, part in shards.items() for n in part}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


@pytest.fixture(scope="module")
def folders(samples, tmp_path_factory) -> tuple[Path, Path]:
    """(transformers 5's folder, the released one), both named "kimi" (the name is written as general.name):
    the released folder is the tiny model rewritten, and transformers 5's is what transformers 5 saves of it
    (the workaround modelport needed before: load it, `save_pretrained`), logit for logit the same model."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("kimi-released")
    released = released_layout(samples("kimi_linear").path, root / "released" / "kimi")
    t5 = root / "t5" / "kimi"
    model = AutoModelForCausalLM.from_pretrained(released).eval()
    model.save_pretrained(t5)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(released / name, t5 / name)
    ids = torch.tensor([list(range(5, 20))])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, samples("kimi_linear").model(ids).logits)
    return t5, released


def test_released_folder_converts_to_the_same_bytes(folders, tmp_path):
    """`modelport convert released/ out.gguf` writes the very file transformers 5's folder gives: every
    metadata value and tensor byte; the released dense MLP is read under `mlp.`, the experts under
    `block_sparse_moe.`."""
    t5, released = folders
    assert any(".mlp.gate_proj" in n for n in json.loads((released / "model.safetensors.index.json").read_text())
               ["weight_map"])
    for folder, out in ((t5, tmp_path / "t5.gguf"), (released, tmp_path / "released.gguf")):
        run = run_cli("convert", folder, out, "--quant", "f32")
        assert run.code == 0, run.stderr
    assert (tmp_path / "released.gguf").read_bytes() == (tmp_path / "t5.gguf").read_bytes()


def test_released_folder_inspects(folders):
    t5, released = folders
    runs = [run_cli("inspect", folder, "--json") for folder in (t5, released)]
    assert all(run.code == 0 for run in runs), [run.stderr for run in runs]
    mine, theirs = (run.json() for run in runs)
    assert mine["architecture"] == "kimi_linear" and mine["tensors"] == theirs["tensors"]
    assert (mine["parameters"], mine["dtypes"]) == (theirs["parameters"], theirs["dtypes"])


def test_released_config_reads_as_transformers_reads_it(folders):
    """The released keys give the values transformers 5's own config class gives them (its layers in
    linear_attn_config numbered from 1), and a config in transformers 5's spelling is left as it is."""
    from transformers import KimiLinearConfig
    t5, released = folders
    spec = spec_for({"model_type": "kimi_linear"})
    config = json.loads((released / "config.json").read_text())
    mine = spec.canonical_config(config)
    theirs = KimiLinearConfig(**{k: v for k, v in config.items() if k not in ("auto_map", "model_type")})
    for key in spec.config_fallbacks:
        assert mine[key] == getattr(theirs, key), key
    saved = json.loads((t5 / "config.json").read_text())
    assert spec.canonical_config(saved) is saved


@pytest.mark.parametrize("changes,missing", [
    (dict(first_k_dense_replace=None), "'first_k_dense_replace'"),
    (dict(linear_attn_config={"kda_layers": [1, 3], "full_attn_layers": [2], "head_dim": 16,
                              "short_conv_kernel_size": 4}), "\"linear_attn_config['num_heads']\""),
    (dict(linear_attn_config=None), "'linear_attn_config'"),
], ids=["first_k_dense_replace", "num_heads", "linear_attn_config"])
def test_a_released_config_that_lacks_a_value_is_a_one_line_config_gap(samples, tmp_path, changes, missing):
    released = released_layout(samples("kimi_linear").path, tmp_path / "kimi", **changes)
    for args in (("convert", released, tmp_path / "m.gguf", "--quant", "f32"), ("inspect", released)):
        run = run_cli(*args)
        assert run.code == 1, run.stderr
        line, = run.stderr.strip().splitlines()
        assert f"its config does not give {missing}" in line, line
    assert not (tmp_path / "m.gguf").exists()


def test_both_spellings_of_one_tensor_are_refused(folders, tmp_path):
    """One checkpoint uses one spelling: a tensor under both is refused, naming both (either could be meant)."""
    from safetensors.numpy import load_file, save_file
    t5, released = folders
    both = tmp_path / "kimi"
    shutil.copytree(released, both)
    shard = both / "model-00001-of-00002.safetensors"
    tensors = load_file(shard)
    tensors["model.layers.0.block_sparse_moe.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, shard, metadata={"format": "pt"})
    index = json.loads((both / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.block_sparse_moe.up_proj.weight"] = shard.name
    (both / "model.safetensors.index.json").write_text(json.dumps(index))
    run = run_cli("convert", both, tmp_path / "m.gguf", "--quant", "f32")
    assert run.code != 0 and "model.layers.0.mlp.up_proj.weight" in run.stderr, run.stderr
    assert "model.layers.0.block_sparse_moe.up_proj.weight" in run.stderr


@pytest.mark.parametrize("base", [False, True], ids=["rebuilt-config", "released-base-model"])
def test_gguf_back_to_hf_is_transformers_5s_layout(folders, tmp_path, base):
    """GGUF -> HF writes transformers 5's layout (what transformers 5 loads), whichever layout was converted:
    the dense MLP under `block_sparse_moe.`, the config's `layer_types` and `mlp_layer_types`; with the
    released folder as --base-model too (its config read as the family's spec spells it)."""
    from safetensors.numpy import load_file
    t5, released = folders
    assert run_cli("convert", released, tmp_path / "m.gguf", "--quant", "f32").code == 0
    run = run_cli("convert", tmp_path / "m.gguf", tmp_path / "hf", *(("--base-model", released) if base else ()))
    assert run.code == 0, run.stderr
    back = load_file(tmp_path / "hf" / "model.safetensors")
    assert "model.layers.0.block_sparse_moe.gate_proj.weight" in back
    assert not any(".mlp." in name for name in back)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    saved = json.loads((t5 / "config.json").read_text())
    assert (config["layer_types"], config["mlp_layer_types"]) == (saved["layer_types"], saved["mlp_layer_types"])
    theirs = load_file(t5 / "model.safetensors")
    for name, array in back.items():
        if not name.endswith("A_log"):      # A = -exp(A_log) comes back within float32 rounding
            np.testing.assert_array_equal(array, theirs[name], err_msg=name)


# where our file may differ from llama.cpp's converter's on the released folder, and why: the expert groups
# the converter does not look for (it asks `n_group`), and what it writes of its own (add_*_token, its name
# and size label)
CONVERTER_OWN_KEYS = ("kimi-linear.expert_group_count", "general.name", "general.size_label",
                      "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token")


def test_released_folder_is_what_llama_cpps_converter_writes(folders, tmp_path):
    """llama.cpp's converter reads only the released layout (its `linear_attn_config`, `first_k_dense_replace`,
    `num_shared_experts`); on it, its file and ours hold the same tensors, types and bytes (A = -exp(A_log)
    within float32 rounding), and the same metadata but for the keys above."""
    from test_gguf_source import same_as_converter

    _, released = folders
    assert run_cli("convert", released, tmp_path / "ours.gguf", "--quant", "f32").code == 0
    same_as_converter(tmp_path / "ours.gguf", released, tmp_path / "ref.gguf", CONVERTER_OWN_KEYS, general=True)


def test_config_fallbacks_and_spellings_are_data_any_family_may_use():
    """The two mechanisms on a made-up family: a fallback is used only where the canonical key is absent or
    null (nested values by subscript, earlier fallbacks visible to later ones), and a spelling is read as the
    template's name."""
    from modelport.architectures import ArchitectureSpec
    from modelport.architectures.expected import expected_tensors
    from modelport.architectures.expressions import MissingConfigValue
    from modelport.architectures.tensors import Tensors, t

    spec = ArchitectureSpec(
        model_type="made_up", config_fallbacks={"width": "block['width']", "double": "2 * width"},
        tensors=Tensors((), (t("layers.{L}.ffn.w", "double", "width"),), spellings=((r"\.ffn\.", ".mlp."),)))
    config = {"model_type": "made_up", "num_hidden_layers": 1, "block": {"width": 3}}
    assert spec.canonical_config(config) == {**config, "width": 3, "double": 6}
    assert spec.canonical_config({**config, "width": 5, "double": None})["double"] == 10
    given = {**config, "width": 4, "double": 8}
    assert spec.canonical_config(given) is given
    with pytest.raises(MissingConfigValue, match="block\\['width'\\]"):
        spec.canonical_config({**config, "block": {}})
    expected = expected_tensors(spec, spec.canonical_config(config))
    assert expected.name_for("layers.0.mlp.w") == expected.name_for("layers.0.ffn.w") == "layers.0.ffn.w"
    assert expected.name_for("layers.0.other.w") is None
