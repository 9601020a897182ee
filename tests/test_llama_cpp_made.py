"""Files as the world makes them: every family's tiny model converted by llama.cpp's own converter
(convert_hf_to_gguf.py), then read by modelport alone: inspected, and brought back to HF without the
source's config (rebuilt from the converter's metadata), computing what the source computes. Where the
converter cannot convert the tiny model, or makes a file llama.cpp itself cannot load, that is checked
too (so an upstream fix shows here), and such a file is refused in one line."""
from __future__ import annotations

import pytest
import torch
from conftest import hf_logits, run_cli
from test_gguf_architectures import DECODERS, VARIANTS
from test_gguf_source import run_reference_convert

import modelport
from modelport.core.errors import CorruptInputError
from modelport.runtimes.llama_cpp import LlamaCppRuntime

NO_SPM = "FileNotFoundError: File not found"            # the tiny model has tokenizer.json, no tokenizer.model
# the converter stops on these tiny models, each with this error (transformers 5 saves the configs and
# names it does not expect; the SentencePiece families' samples carry no tokenizer.model)
CONVERTER_FAILS = {
    "bitnet": "Can not map tensor 'model.layers.0.mlp.ffn_sub_norm.weight'",
    "ernie4_5": NO_SPM, "ernie4_5_moe": NO_SPM, "gemma": NO_SPM, "gemma2": NO_SPM,
    "phi3": "Error: Missing", "jamba": "Cannot find Llama BPE tokenizer", "jamba-dense": "Cannot find Llama BPE tokenizer",
    "glm4": "KeyError: '<|endoftext|>'", "glm4_moe": "KeyError: '[gMASK]'",       # GLM's own special tokens
    "gpt2": "KeyError: 'n_ctx'", "gpt_neox": "KeyError: 'rotary_pct'",          # keys transformers 5 no longer saves
    "hunyuan_v1_moe": "KeyError: 'moe_intermediate_size'",
    "kimi_linear": "Can not map tensor 'model.layers.0.block_sparse_moe.down_proj.weight'",  # it reads the released layout
    "qwen3_next": "AssertionError",                     # its multi-token-prediction layer count
}
# the converter writes these into files llama.cpp cannot load
UNLOADABLE = {
    "granitemoehybrid": "head_count_kv [0, 0]: it reads the layer kinds IBM spells (\"attention\"), not transformers 5's",
    "granitemoehybrid-dense": "head_count_kv [0, 0], as above",
    "nemotron_h": "NEMOTRON_H_MOE for a dense config (transformers 5 saves n_routed_experts 8)",
    "phi": "feed_forward_length 4 x hidden (256) where the tensors have 128",
    "gemma3n_text": "no placeholder K/V tensors for the KV-sharing layers (docs/architectures.md)",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", DECODERS + VARIANTS)
def test_llama_cpp_made_gguf_comes_back(samples, tmp_path, name):
    import gguf
    sample = samples(name)
    ours = tmp_path / "ours.gguf"
    modelport.convert(sample.path, ours, quant="f32")
    pre = gguf.GGUFReader(ours).fields["tokenizer.ggml.pre"].contents()
    theirs = tmp_path / "theirs.gguf"
    made = run_reference_convert(sample.path, theirs, pre)
    if name in CONVERTER_FAILS:
        assert made.returncode != 0 and CONVERTER_FAILS[name] in made.stderr, made.stderr[-2000:]
        return
    assert made.returncode == 0, made.stderr[-2000:]
    if name in UNLOADABLE:
        with pytest.raises(CorruptInputError):
            LlamaCppRuntime(theirs)
        run = run_cli("convert", theirs, tmp_path / "hf")
        assert run.code in (1, 2) and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "hf").exists()
        return
    info = run_cli("inspect", theirs, "--json")
    assert info.code == 0, info.stderr
    modelport.convert(theirs, tmp_path / "hf")
    assert torch.allclose(hf_logits(tmp_path / "hf"), sample.logits(), atol=1e-4), name
