"""The streaming safetensors writer's files are read back by the safetensors library itself."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from modelport.core.torch_arrays import dtype_name, to_numpy
from modelport.formats.hf.safetensors_io import PlannedTensor, SafetensorsStreamWriter


def test_round_trip_every_dtype(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(7).to(torch.bfloat16),
        "f16": torch.randn(2, 2, 2).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(3.5),
    }
    plan = [PlannedTensor(k, tuple(v.shape), dtype_name(v.dtype)) for k, v in tensors.items()]
    with SafetensorsStreamWriter(tmp_path / "t.safetensors", plan, {"format": "pt", "by": "test"}) as w:
        for k, v in tensors.items():
            w.write(k, to_numpy(v))
    with safe_open(tmp_path / "t.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "by": "test"}
        for k, v in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and torch.equal(got, v), k


def test_out_of_plan_write_is_refused(tmp_path):
    plan = [PlannedTensor("a", (2,), "float32")]
    with pytest.raises(ValueError, match="planned PlannedTensor"):
        with SafetensorsStreamWriter(tmp_path / "t.safetensors", plan) as w:
            w.write("a", to_numpy(torch.zeros(3)))


def test_non_contiguous_tensor(tmp_path):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    with SafetensorsStreamWriter(tmp_path / "t.safetensors", [PlannedTensor("t", (4, 3), "float32")]) as w:
        w.write("t", to_numpy(t))
    with safe_open(tmp_path / "t.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("t"), t)
