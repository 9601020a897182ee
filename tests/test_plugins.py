"""Architecture plugins: the example OLMo plugin converts and verifies end to end; discovery paths."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_cli

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"


@pytest.fixture(scope="module")
def olmo(tmp_path_factory) -> Path:
    from transformers import OlmoConfig, OlmoForCausalLM

    from modelport.samples import train_tokenizer
    path = tmp_path_factory.mktemp("olmo") / "model"
    tok = train_tokenizer("bpe")
    config = OlmoConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, clip_qkv=8.0,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    OlmoForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_unknown_architecture_points_at_the_plugin_docs(olmo, tmp_path):
    run = run_cli("convert", olmo, tmp_path / "olmo.gguf", subprocess_only=True)
    assert run.code == 1
    assert "unknown architecture 'olmo'" in run.stderr and "docs/architectures.md" in run.stderr
    assert "llama" in run.stderr                      # the supported list


def test_example_plugin_converts_and_verifies(olmo, tmp_path):
    gguf = run_cli("convert", olmo, tmp_path / "olmo.gguf", "--quant", "f32", "--plugin-path", PLUGINS,
                   "--verify", "--json", subprocess_only=True)
    assert gguf.code == 0, gguf.stderr
    report = gguf.json()["verification"]
    assert report["runtime"]["converted"] == "llama.cpp" and report["metrics"]["min_cosine"] > 0.99999
    import gguf as gguf_py
    reader = gguf_py.GGUFReader(tmp_path / "olmo.gguf")
    assert reader.fields["general.architecture"].contents() == "olmo"
    assert reader.fields["olmo.attention.clamp_kqv"].contents() == pytest.approx(8.0)
    hf = run_cli("convert", olmo, tmp_path / "hf", "--dtype", "bfloat16", "--plugin-path", PLUGINS, "--verify",
                 subprocess_only=True)
    assert hf.code == 0, hf.stderr


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
