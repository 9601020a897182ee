"""Every family's spec, checked as data: no llama.cpp, seconds for all of them.

- Its tensor templates give exactly the names, shapes and order transformers' own model has (built
  on the meta device from the spec's tiny config, transformers 5's load-time conversions reverted to
  the saved names), so the data cannot drift from transformers.
- Every expected tensor has a GGUF name (or is one llama.cpp skips), and its rules then their
  inverses give the input back, whole and a row block at a time.
- docs/architectures.md's family table lists every registered family with its GGUF arch and ONNX family.
"""
from __future__ import annotations

import numpy as np
import pytest

from modelport.architectures import registered
from modelport.architectures.expected import _from_transformers, expected_tensors
from modelport.architectures.hparams import hparams
from modelport.core.bundle import rows_per_block

def _with_variants(specs: list) -> list:
    """Each spec, then each of its variants (the spec as the config selecting it makes it), as params."""
    return [*(pytest.param(s, id=s.model_type) for s in specs),
            *(pytest.param(s.variant(v.name), id=f"{s.model_type}-{v.name}") for s in specs for v in s.variants)]


SPECS = _with_variants([s for s in registered() if s.tensors is not None])
GGUF_SPECS = _with_variants([s for s in registered() if s.gguf is not None and s.tensors is not None])
VOCAB = 96


def tiny_config(spec, **overrides) -> dict:
    return {"model_type": spec.model_type, "vocab_size": VOCAB, **spec.tiny, **overrides}


def variants(spec) -> list[dict]:
    """The tiny config, and the same with its optional tensors switched the other way."""
    base = tiny_config(spec)
    flipped = {k: not v for k, v in base.items() if k in ("tie_word_embeddings",)}
    flipped.update({k: True for k in ("attention_bias", "mlp_bias") if k not in base})
    return [base, {**base, **flipped}]


def _reorders_on_save(spec, config) -> bool:
    """Whether transformers saves this family through its conversion mapping, whose order is its own."""
    from transformers.conversion_mapping import get_model_conversion_mapping

    from modelport.architectures.expected import build_model
    return bool(get_model_conversion_mapping(build_model(spec.hf_class, config, "meta"), add_legacy=False))


@pytest.mark.parametrize("spec", SPECS)
def test_templates_match_transformers(spec):
    for config in variants(spec):
        ours = expected_tensors(spec, config)
        theirs = _from_transformers(spec.hf_class, config)
        if _reorders_on_save(spec, config):
            assert ours.shapes == theirs.shapes, config
        else:                   # in save_pretrained's order, which the HF writer keeps
            assert list(ours.shapes.items()) == list(theirs.shapes.items()), config
        assert ours.tied == theirs.tied, config


@pytest.mark.parametrize("spec", GGUF_SPECS)
def test_rules_round_trip_and_every_tensor_has_a_target(spec):
    _round_trips(spec, tiny_config(spec))


def _round_trips(spec, config: dict) -> None:
    """Every tensor of `config` has a GGUF target; its rules then their inverses give it back."""
    hp = hparams(config, spec.tie_default)
    mapping = spec.gguf
    rng = np.random.default_rng(0)
    expected = expected_tensors(spec, config)
    for name, shape in expected.shapes.items():
        if name.endswith(mapping.skip) or name in expected.tied:      # tied copies are written once, as their target
            continue
        if mapping.layer_value(name):                                  # a value of a per-layer metadata array
            assert shape in ((), (1,)), name
            continue
        targets = mapping.targets(name, hp)
        assert targets, f"{spec.model_type}: no GGUF name for {name}"
        value = rng.standard_normal(shape).astype(np.float32)
        rows = shape[0] if len(shape) >= 2 else 1
        backs, back_shapes = [], []
        for target in targets:
            chain = target.chain
            whole = chain.forward(value, hp, rows)
            assert tuple(whole.shape) == chain.shape(shape)
            back_shapes.append(chain.inverse_shape(tuple(whole.shape)))
            backs.append(chain.inverse(whole, hp))
            unit = chain.unit(hp, shape) if len(shape) >= 2 else None
            if unit is not None:
                step = max(unit, rows_per_block(int(np.prod(shape[1:])), unit) // 8 // unit * unit)
                blocks = [chain.forward(value[i:i + step], hp, rows) for i in range(0, rows, step)]
                np.testing.assert_array_equal(np.concatenate(blocks), whole)
        take = targets[0].chain.take
        assert (take.joined_shape(back_shapes) if take else back_shapes[0]) == tuple(shape)
        back = take.join(backs) if take else backs[0]
        if targets[0].chain.changes_dtype:      # an added offset or a multiplier: back within float32 rounding
            np.testing.assert_allclose(back, value, rtol=3e-7, atol=4e-7)
        else:
            np.testing.assert_array_equal(back, value)


def test_docs_table_lists_every_family():
    import re
    from pathlib import Path

    import gguf
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architectures.md").read_text()
    table = doc.split("<!-- families:start -->")[1].split("<!-- families:end -->")[0]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in table.strip().splitlines()[2:])}
    assert set(rows) == {s.model_type for s in registered()}, "run bench/measure_families.py --write"
    for spec in registered():
        _, _, arch, cpp, back, onnx, _ = rows[spec.model_type]
        assert arch == (gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[spec.gguf.arch]] if spec.gguf else "—"), spec.model_type
        assert onnx == (spec.onnx or "—"), spec.model_type
        if spec.gguf and spec.hf_class.endswith("CausalLM"):       # measured, within the test's own bounds
            assert re.fullmatch(r"\d\.\de[-+]\d\d", cpp) and float(cpp) < spec.gguf.tolerance, (spec.model_type, cpp)
            assert float(back) < 1e-4, (spec.model_type, back)


@pytest.mark.parametrize("spec", GGUF_SPECS)
def test_configs_rebuilt_from_gguf_use_transformers_spelling(spec):
    """Each config key a GGUF's metadata is read back into is one the family's transformers config takes
    (the spelling of the spec's tiny config): a key it ignores would leave its default in force."""
    from transformers import AutoConfig

    from modelport.architectures.hparams import VARIABLES
    from modelport.formats.gguf.config_rebuild import ROPE, _source, _spelling
    from modelport.architectures.gguf_mapping import key_values
    config = AutoConfig.for_model(spec.model_type)
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    saved = AutoConfig.for_model(**tiny_config(spec)).to_dict()        # every key, as config.json holds them
    written = key_values(spec.gguf.metadata, hparams(saved, spec.tie_default), "{arch}")
    for key, entry in spec.gguf.metadata.items():
        name = _source(entry.value)
        if key not in written:              # not written for this family: never read back
            continue
        if name is None or name in ROPE or name in ("rope_theta", "rot_dim", "rope_theta_swa"):
            continue
        spellings = VARIABLES[name][0] if name in VARIABLES else (name,)
        if any(s in known for s in spellings):      # a setting this config has: under the name it reads
            assert _spelling(spec, name) in known, (spec.model_type, key, _spelling(spec, name))
