"""`modelport inspect`: what a path holds, read from headers only."""
from __future__ import annotations

import torch
from conftest import run_cli


def test_inspect_hf_folder(qwen2):
    run = run_cli("inspect", qwen2.path, "--json")
    assert run.code == 0, run.stderr
    info = run.json()
    n_params = sum(p.numel() for p in qwen2.model.parameters())  # parameters() counts tied weights once
    assert info["format"] == "hf" and info["architecture"] == "qwen2"
    assert info["parameters"] == n_params
    assert info["dtypes"] == {"float32": info["tensors"]}
    assert info["bytes"] == 4 * n_params
    assert info["tokenizer"] is True and "tokenizer.json" in info["tokenizer_files"]
    assert info["tied"] == ["lm_head.weight"]


def test_inspect_checkpoint_with_base_and_human_output(llama, tmp_path):
    torch.save({"model": {k: v.half() for k, v in llama.model.state_dict().items()}}, tmp_path / "step_5.pth")
    run = run_cli("inspect", tmp_path / "step_5.pth", "--base-model", llama.path, "--json")
    info = run.json()
    assert info["format"] == "torch" and info["dtypes"] == {"float16": 21}
    human = run_cli("inspect", tmp_path, "--base-model", llama.path)
    assert human.code == 0 and "checkpoints" in human.stdout and "step_5.pth" in human.stdout


def test_inspect_gguf_shows_what_the_file_holds(samples, tmp_path):
    """A Q4_K_M file: its file type, tensors and bytes per GGML type and bits per weight, as gguf-py
    reads them from the same file; the float dtype a conversion would give is labelled as that."""
    import gguf

    import modelport
    path = tmp_path / "m.gguf"
    modelport.convert(samples("llama-quant").path, path, quant="q4_k_m")
    run = run_cli("inspect", path, "--json")
    assert run.code == 0, run.stderr
    info = run.json()
    reader = gguf.GGUFReader(path)
    expected: dict[str, dict[str, int]] = {}
    for t in reader.tensors:
        entry = expected.setdefault(t.tensor_type.name, {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += int(t.n_bytes)
    assert info["file_type"] == "Q4_K_M"
    assert info["tensor_types"] == expected and {"Q4_K", "F32"} <= set(expected)
    assert info["dtypes"] == {name: entry["tensors"] for name, entry in expected.items()}
    n_bytes, n_values = sum(int(t.n_bytes) for t in reader.tensors), sum(int(t.n_elements) for t in reader.tensors)
    assert info["bits_per_weight"] == round(n_bytes * 8 / n_values, 2) and 4 < info["bits_per_weight"] < 8
    assert info["bytes"] == n_bytes and info["bytes_after_conversion"] == 4 * info["parameters"]
    assert info["dtypes_after_conversion"] == {"float32": info["tensors"]}
    vocab = info["vocabulary"]
    assert vocab["model"] == "gpt2" and vocab["rebuildable"] is True and vocab["why_not"] is None
    assert vocab["size"] == len(reader.fields["tokenizer.ggml.tokens"].contents())
    assert vocab["special_ids"]["bos"] == reader.fields["tokenizer.ggml.bos_token_id"].contents()
    assert vocab["chat_template"] is False
    human = run_cli("inspect", path)
    assert human.code == 0 and "Q4_K_M" in human.stdout and "bits_per_weight" in human.stdout


def test_inspect_gguf_whose_tokenizer_cannot_be_rebuilt(samples, tmp_path):
    """An unknown pre-tokenizer name, or a type no HF pre-tokenizer restates: inspect exits 0 and says why;
    convert to HF refuses in one line naming it (exit 2)."""
    import modelport
    from gguf_faults import rewrite
    made = tmp_path / "m.gguf"
    modelport.convert(samples("llama").path, made, quant="f32")
    for pre, words in (("mystery-pre", "not a pre-tokenizer llama.cpp knows"), ("kimi-k2", "KIMI_K2")):
        path = tmp_path / f"{pre}.gguf"
        rewrite(made, path, fields=lambda values: values.update({"tokenizer.ggml.pre": pre}))
        run = run_cli("inspect", path, "--json")
        assert run.code == 0, run.stderr
        info = run.json()
        assert info["vocabulary"]["pre"] == pre and info["vocabulary"]["rebuildable"] is False
        assert pre in info["vocabulary"]["why_not"] and words in info["vocabulary"]["why_not"]
        assert info["tokenizer"] is False and any("tokenizer not rebuilt" in n for n in info["notes"])
        human = run_cli("inspect", path)
        assert human.code == 0 and words in human.stdout
        refused = run_cli("convert", path, tmp_path / f"{pre}-hf")
        assert refused.code == 2 and len(refused.stderr.strip().splitlines()) == 1 and pre in refused.stderr
        assert not (tmp_path / f"{pre}-hf").exists()


def test_inspect_gguf_without_a_model_modelport_can_read(tmp_path):
    """A vocabulary-only GGUF (no tensors, no family its metadata fits): the header is still shown, and
    why it cannot be read as a model."""
    import gguf
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(["a", "b", "ab"])
    writer.add_token_types([1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_chat_template("{{ messages }}")
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    run = run_cli("inspect", path, "--json")
    assert run.code == 0, run.stderr
    info = run.json()
    assert info["model"] is None and "config.json" in info["why_no_model"]
    assert info["tensor_types"] == {} and info["bits_per_weight"] is None
    assert info["vocabulary"] == {"model": "gpt2", "pre": "qwen2", "size": 3, "special_ids": {}, "chat_template": True,
                                  "rebuildable": True, "why_not": None}
