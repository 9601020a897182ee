"""Training-side edits: added tokens (rows, ids, tokenization in transformers and llama.cpp), chat
template, max length; and the round trips a fine-tuning loop makes."""
from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
import torch
from conftest import IDS, hf_logits, leftovers, run_cli
from safetensors.torch import load_file

TOKENS = """
bos_token: "<|begin_of_text|>"
eos_token: {token: "<|end_of_text|>", init: mean}
pad_token: {token: "<|pad|>", init: zero}
unk_token: "<unk>"
special_tokens: ["<|im_start|>", "<|im_end|>"]
regular_tokens: ["custom_token_1"]
"""
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NEW = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "custom_token_1"]


@pytest.fixture
def edit_files(tmp_path):
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    (tmp_path / "chat.jinja").write_text(CHATML)
    return tmp_path / "tokens.yaml", tmp_path / "chat.jinja"


def test_added_tokens_in_hf_output(llama, tmp_path, edit_files):
    tokens, chat = edit_files
    run = run_cli("convert", llama.path, tmp_path / "out", "--add-tokens", tokens, "--chat-template", chat,
                  "--max-length", "1024", "--verify", "--json")
    assert run.code == 0, run.stderr
    out = tmp_path / "out"
    old_vocab = llama.model.config.vocab_size
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == old_vocab + 6 and config["max_position_embeddings"] == 1024

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out)
    ids = [tok.convert_tokens_to_ids(t) for t in NEW]
    assert ids == list(range(old_vocab, old_vocab + 6))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>")
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == tuple(ids[:3])
    assert tok.unk_token == "<unk>" and tok.convert_tokens_to_ids("<unk>") < old_vocab     # pointer moved only
    assert ids[3] in tok("<|im_start|>user")["input_ids"] and ids[5] in tok("a custom_token_1")["input_ids"]
    assert tok.model_max_length == 1024

    weights = load_file(str(out / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = llama.model.state_dict()[name], weights[name]
        assert torch.equal(new[:old_vocab], old)
        mean = old.float().mean(0)
        for row, token in zip(ids, NEW):
            expected = torch.zeros_like(mean) if token == "<|pad|>" else mean
            assert torch.allclose(new[row].float(), expected, atol=1e-6), (name, token)
    assert torch.equal(hf_logits(out)[..., :old_vocab], llama.logits())        # the old tokens' logits unchanged
    assert run.json()["verification"]["ok"]


def test_added_tokens_in_gguf_tokenize_and_template_like_transformers(llama, tmp_path, edit_files):
    tokens, chat = edit_files
    hf = run_cli("convert", llama.path, tmp_path / "hf", "--add-tokens", tokens, "--chat-template", chat)
    gguf_run = run_cli("convert", llama.path, tmp_path / "m.gguf", "--quant", "f32", "--add-tokens", tokens,
                       "--chat-template", chat, "--max-length", "256", "--verify")
    assert hf.code == 0 and gguf_run.code == 0, gguf_run.stderr
    import gguf
    from transformers import AutoTokenizer

    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["tokenizer.chat_template"].contents() == CHATML
    assert reader.fields["llama.context_length"].contents() == 256
    runtime = LlamaCppRuntime(tmp_path / "m.gguf")
    for text in ["<|im_start|>user\nhello custom_token_1 world<|im_end|>", "plain text, no new tokens 123"]:
        assert runtime.tokenize(text) == tok(text)["input_ids"], text
    assert runtime.llm.token_bos() == tok.bos_token_id and runtime.llm.token_eos() == tok.eos_token_id

    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    import llama_cpp
    array = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages])
    buf = ctypes.create_string_buffer(4096)
    template = reader.fields["tokenizer.chat_template"].contents().encode()
    n = llama_cpp.llama_chat_apply_template(template, array, len(messages), True, buf, len(buf))
    assert buf.raw[:n].decode() == expected


def test_tied_embeddings_grow_together_and_old_format(qwen2, tmp_path):
    (tmp_path / "old.yaml").write_text('special_tokens: ["<|x|>"]\nregular_tokens: ["hello_world_token"]\n')
    run = run_cli("convert", qwen2.path, tmp_path / "out", "--add-tokens", tmp_path / "old.yaml")
    assert run.code == 0, run.stderr
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "lm_head.weight" not in weights                      # still tied: written once
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    old_vocab = qwen2.model.config.vocab_size
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == old_vocab + 2
    with torch.no_grad():
        assert torch.equal(model(IDS).logits[..., :old_vocab], qwen2.logits())


def test_if_missing_keeps_a_set_token_and_nothing_is_added_unasked(llama, tmp_path):
    (tmp_path / "pad.yaml").write_text('bos_token: {token: "<|other|>", if_missing: true}\n')
    run = run_cli("convert", llama.path, tmp_path / "out", "--add-tokens", tmp_path / "pad.yaml")
    assert run.code == 0, run.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == llama.model.config.vocab_size               # bos was set: nothing added
    plain = run_cli("convert", llama.path, tmp_path / "plain")
    assert plain.code == 0
    assert (tmp_path / "plain" / "tokenizer.json").read_bytes() == (llama.path / "tokenizer.json").read_bytes()


def test_edit_errors(llama, gpt2, tmp_path):
    (tmp_path / "bad.yaml").write_text("bos_tokn: x\n")
    bad = run_cli("convert", llama.path, tmp_path / "o1", "--add-tokens", tmp_path / "bad.yaml")
    assert bad.code == 2 and "bos_tokn" in bad.stderr
    (tmp_path / "bad.jinja").write_text("{% for %}")
    broken = run_cli("convert", llama.path, tmp_path / "o2", "--chat-template", tmp_path / "bad.jinja")
    assert broken.code == 2 and "Jinja2" in broken.stderr
    learned = run_cli("convert", gpt2.path, tmp_path / "o3", "--max-length", "4096")
    assert learned.code == 2 and "learns a table" in learned.stderr
    assert leftovers(tmp_path) == [] and not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


def test_added_tokens_in_onnx_output(llama, tmp_path, edit_files):
    tokens, _ = edit_files
    run = run_cli("convert", llama.path, tmp_path / "m.onnx", "--add-tokens", tokens, "--json")
    assert run.code == 0, run.stderr
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input_ids": IDS.numpy(), "attention_mask": np.ones_like(IDS.numpy())})[0]
    old_vocab = llama.model.config.vocab_size
    assert logits.shape[-1] == old_vocab + 6
    assert np.abs(logits[..., :old_vocab] - llama.logits().numpy()).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jinja", "m.onnx", "tokens.yaml"]   # no leftovers


def test_hf_dcp_training_step_hf_round_trip(llama, tmp_path):
    """HF -> DCP, one optimizer step on the DCP weights as FSDP2 training would, -> HF: same logits as the
    trained model."""
    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM
    assert run_cli("convert", llama.path, tmp_path / "dcp", "--to", "dcp").code == 0
    model = AutoModelForCausalLM.from_pretrained(llama.path)
    state = model.state_dict()
    dcp.load(state, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(IDS, labels=IDS).loss.backward()
    optimizer.step()
    model.eval()
    dcp.save({k: v.detach() for k, v in model.state_dict().items()}, checkpoint_id=str(tmp_path / "step_1"),
             no_dist=True)
    back = run_cli("convert", tmp_path / "step_1", tmp_path / "hf", "--base-model", llama.path, "--verify")
    assert back.code == 0, back.stderr
    with torch.no_grad():
        trained = model(IDS).logits
    assert not torch.equal(trained, llama.logits())                 # the step changed the weights
    assert torch.equal(hf_logits(tmp_path / "hf"), trained)
