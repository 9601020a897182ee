"""Small pieces with behaviour of their own: the prefetch window, the architecture cache, checkpoint names."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from modelport.architectures import spec_for
from modelport.architectures.expected import cache_dir, expected_tensors
from modelport.core.errors import UnknownArchitectureError
from modelport.core.sizes import parse_size
from modelport.core.stream import prefetch
from modelport.formats.checkpoints import step_of


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


def test_expected_tensors_are_cached_on_disk(tmp_path, monkeypatch):
    """A family without tensor templates (T5) asks transformers once: the answer is written to one file
    in the cache, and the next one is read from that file."""
    from modelport.architectures import expected
    from modelport.samples import TINY_OTHER
    monkeypatch.setenv("MODELPORT_CACHE_DIR", str(tmp_path))
    expected._cached.cache_clear()
    config = dict(TINY_OTHER["t5"][1])
    name = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    found = expected_tensors(spec_for(config), config)
    (file,) = cache_dir().glob("*.json")
    data = json.loads(file.read_text())
    assert data["shapes"][name] == list(found.shapes[name])
    data["shapes"]["planted.weight"] = [1]                      # only a read of the file can return this
    file.write_text(json.dumps(data))
    expected._cached.cache_clear()
    assert expected_tensors(spec_for(config), config).shapes["planted.weight"] == (1,)
    expected._cached.cache_clear()


def test_unknown_model_type_lists_supported():
    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'mamba9'") as err:
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


def test_safetensors_rows_are_exact_and_copy_on_write(tmp_path):
    """Rows come from a private mapping of their own bytes: equal to the library's slices for every
    dtype and at any offset (page-unaligned ones too), and writable while the file stays as it was."""
    import torch
    from safetensors.torch import save_file

    from modelport.core.torch_arrays import dtype_name, to_torch
    from modelport.formats.hf.reader import safetensors_refs

    g = torch.Generator().manual_seed(0)
    tensors = {"bf16": torch.randn(37, 129, generator=g).to(torch.bfloat16),
               "f32": torch.randn(3000, 1001, generator=g),
               "i64": torch.arange(11, dtype=torch.int64),
               "f8": torch.randn(5, 7, 3, generator=g).to(torch.float8_e4m3fn),
               "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.5)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    before = path.read_bytes()
    refs = safetensors_refs(path)
    for name, t in tensors.items():
        if t.ndim == 0 or t.shape[0] == 0:
            assert refs[name].rows is None and torch.equal(to_torch(refs[name].load()), t)
            continue
        n = t.shape[0]
        for start, stop in [(0, 1), (1, 2), (n // 3, n - 1), (0, n), (n - 1, n), (2, 2)]:
            got = refs[name].load_rows(start, stop)
            assert got.dtype.name == dtype_name(t.dtype) and got.shape == t[start:stop].shape
            assert torch.equal(to_torch(got).view(torch.uint8), t[start:stop].contiguous().view(torch.uint8)), (name, start)
    rows = refs["f32"].load_rows(10, 20)
    rows += 1.0                                 # copy-on-write: the file keeps its bytes
    assert path.read_bytes() == before



def _resident_fraction(path, start: int, stop: int) -> float:
    """Share of the file's pages in [start, stop) that are in the page cache (mincore)."""
    import ctypes
    import mmap
    import os

    pages = -(-(stop - start) // os.sysconf("SC_PAGE_SIZE"))
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), stop - start, offset=start, access=mmap.ACCESS_COPY)
    anchor = ctypes.c_char.from_buffer(mapped)
    assert ctypes.CDLL(None).mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(stop - start), vec) == 0
    del anchor
    mapped.close()
    return sum(v & 1 for v in vec) / pages


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="write-behind is a Linux hint")
def test_write_behind_keeps_only_a_window_of_the_output_cached(tmp_path):
    """Bytes written through WriteBehind reach the disk and leave the page cache a window behind the
    newest write; the same writes without it stay cached (so the check can tell the difference)."""
    from modelport.files.writeback import WriteBehind

    chunk, count, window = 1 << 20, 48, 8 << 20
    data = os.urandom(chunk)
    for behind in (True, False):
        path = tmp_path / f"out-{behind}.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        tracker = WriteBehind(fd, window=window)
        for i in range(count):
            assert os.pwrite(fd, data, i * chunk) == chunk
            if behind:
                tracker.wrote(i * chunk, chunk)
        os.close(fd)
        early = _resident_fraction(path, 0, (count - 16) * chunk)
        if behind:
            assert early < 0.1, early
        else:
            assert early > 0.9, early
        with open(path, "rb") as f:
            assert all(f.read(chunk) == data for _ in range(count))
