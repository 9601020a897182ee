"""Small pieces with behaviour of their own: the prefetch window, the architecture cache, checkpoint names."""
from __future__ import annotations

import json
import threading
import time

import pytest

from modelport.architectures import spec_for
from modelport.architectures.expected import cache_dir, expected_tensors
from modelport.checkpoints import step_of
from modelport.errors import UnknownArchitectureError
from modelport.sizes import parse_size
from modelport.stream import prefetch


def test_prefetch_keeps_order_and_respects_byte_budget():
    """With threads to spare, only the byte budget limits how far ahead work starts."""
    started, consumed, ahead, lock = [0], [0], [0], threading.Lock()

    def load(n: int) -> int:
        with lock:
            started[0] += 1
            ahead[0] = max(ahead[0], started[0] - consumed[0])
        time.sleep(0.005)
        return n

    out = []
    for _item, value in prefetch(range(1, 21), load, window=8, threads=8, size=lambda n: 10, budget=30):
        out.append(value)
        with lock:
            consumed[0] += 1
    assert out == list(range(1, 21))
    assert ahead[0] == 3            # 30 bytes of budget: 3 items started and not yet consumed
    ahead[0] = started[0] = consumed[0] = 0
    for _ in prefetch(range(1, 21), load, window=8, threads=8):
        with lock:
            consumed[0] += 1
    assert ahead[0] > 3             # without a budget the window (8) is the limit: the budget did the work


def test_prefetch_propagates_errors():
    def boom(n: int) -> int:
        if n == 3:
            raise ValueError("bad tensor")
        return n
    with pytest.raises(ValueError, match="bad tensor"):
        list(prefetch(range(6), boom))


def test_expected_tensors_are_cached_on_disk(llama):
    config = json.loads((llama.path / "config.json").read_text())
    config["num_hidden_layers"] = 3     # a shape no other test asked for
    found = expected_tensors(spec_for(config), config)
    assert "model.layers.2.mlp.up_proj.weight" in found.shapes
    files = list(cache_dir().glob("*.json"))
    assert files and any("model.layers.2.mlp.up_proj.weight" in f.read_text() for f in files)


def test_unknown_model_type_lists_supported():
    with pytest.raises(UnknownArchitectureError) as err:
        spec_for({"model_type": "mamba9"})
    assert "llama" in str(err.value) and "gpt2" in str(err.value) and "mamba9" in str(err.value)


@pytest.mark.parametrize("name,step", [
    ("checkpoint-1000", 1000), ("step_1000", 1000), ("global_step1000", 1000), ("window-42", 42),
    ("epoch-001-final-ckpt.pth", 1), ("model.pth", None), ("run3-checkpoint-20", 20),
])
def test_step_numbers_in_names(name, step):
    assert step_of(name) == step


def test_sizes():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2G") == 2 * 10**9
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("500MB") == 500 * 10**6
