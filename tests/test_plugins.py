"""Architecture plugins: the example Nemotron plugin (one file of data) converts and verifies end to end;
discovery paths."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_cli

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"


@pytest.fixture(scope="module")
def nemotron(tmp_path_factory) -> Path:
    """A Nemotron model built by transformers alone (modelport's samples know no Nemotron without the plugin)."""
    from transformers import NemotronConfig, NemotronForCausalLM

    from modelport.samples import train_tokenizer
    path = tmp_path_factory.mktemp("nemotron") / "model"
    tok = train_tokenizer("bpe")
    config = NemotronConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = NemotronForCausalLM(config)
    with torch.no_grad():           # LayerNorm1P starts at w = 0 (used as 1 + w): vary it so the offset shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_unknown_architecture_points_at_the_plugin_docs(nemotron, tmp_path):
    run = run_cli("convert", nemotron, tmp_path / "nemotron.gguf", subprocess_only=True)
    assert run.code == 1
    assert "unknown architecture 'nemotron'" in run.stderr and "docs/architectures.md" in run.stderr
    assert "llama" in run.stderr                      # the supported list
    assert not (tmp_path / "nemotron.gguf").exists()


def test_example_plugin_converts_and_verifies(nemotron, tmp_path):
    gguf = run_cli("convert", nemotron, tmp_path / "nemotron.gguf", "--quant", "f32", "--plugin-path", PLUGINS,
                   "--verify", "--json", subprocess_only=True)
    assert gguf.code == 0, gguf.stderr
    report = gguf.json()["verification"]
    assert report["runtime"]["converted"] == "llama.cpp" and report["metrics"]["min_cosine"] > 0.99999
    assert report["metrics"]["max_abs_diff"] < 1e-3
    import gguf as gguf_py
    reader = gguf_py.GGUFReader(tmp_path / "nemotron.gguf")
    assert reader.fields["general.architecture"].contents() == "nemotron"
    assert "blk.0.ffn_gate.weight" not in {t.name for t in reader.tensors}
    hf = run_cli("convert", nemotron, tmp_path / "hf", "--dtype", "bfloat16", "--plugin-path", PLUGINS, "--verify",
                 subprocess_only=True)
    assert hf.code == 0, hf.stderr
    back = run_cli("convert", tmp_path / "nemotron.gguf", tmp_path / "back", "--base-model", nemotron,
                   "--plugin-path", PLUGINS, "--verify", subprocess_only=True)
    assert back.code == 0, back.stderr


def test_entry_point_and_decorator_spellings(tmp_path, monkeypatch):
    """A package's entry point is found without any flag; `@register_architecture()` works too."""
    pkg = tmp_path / "site"
    (pkg / "myplugin").mkdir(parents=True)
    (pkg / "myplugin" / "__init__.py").write_text(textwrap.dedent("""
        from modelport import ArchitectureSpec, register_architecture

        @register_architecture()
        def spec():
            return ArchitectureSpec(model_type="mything", hf_class="LlamaForCausalLM")
    """))
    dist = pkg / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[modelport.architectures]\nmything = myplugin\n")
    monkeypatch.syspath_prepend(str(pkg))
    from modelport.architectures import spec_for, supported_model_types
    assert "mything" in supported_model_types()
    assert spec_for({"model_type": "mything"}).hf_class == "LlamaForCausalLM"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.py").write_text("raise RuntimeError('oops')\n")
    run = run_cli("inspect", tmp_path, "--plugin-path", broken, subprocess_only=True)
    assert run.code == 2 and "bad.py" in run.stderr and "plugin failed to load" in run.stderr
    sys.modules.pop("myplugin", None)
