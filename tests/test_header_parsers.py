"""The GGUF and safetensors header parsers, driven directly by hypothesis: any bytes give a header or
one CorruptInputError, never another exception, a hang or an allocation beyond the input's size."""
from __future__ import annotations

import struct
from pathlib import Path

import hostile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.core.errors import CorruptInputError
from modelport.formats.gguf.header import read_header as read_gguf
from modelport.formats.hf.safetensors_io import read_header as read_safetensors

EXAMPLES = settings(max_examples=300, deadline=2000, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def valid(llama, tmp_path_factory) -> dict[str, bytes]:
    from modelport import convert
    out = tmp_path_factory.mktemp("valid") / "model.gguf"
    convert(llama.path, out, quant="f32")
    return {"gguf": out.read_bytes(), "safetensors": (llama.path / "model.safetensors").read_bytes()}


def _parses_or_refuses(reader, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        reader(path)
    except CorruptInputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@EXAMPLES
@given(data=st.binary(max_size=4096))
def test_gguf_any_bytes(tmp_path, data):
    _parses_or_refuses(read_gguf, tmp_path / "x.gguf", b"GGUF" + data)


@EXAMPLES
@given(data=st.binary(max_size=4096))
def test_safetensors_any_bytes(tmp_path, data):
    _parses_or_refuses(read_safetensors, tmp_path / "x.safetensors", data)


@EXAMPLES
@given(at=st.integers(min_value=0), width=st.sampled_from(["B", "I", "Q"]), value=st.integers(min_value=0))
def test_gguf_one_field_rewritten(valid, tmp_path, at, width, value):
    """Structure kept, one integer anywhere in the header and tensor table set to anything."""
    data = bytearray(valid["gguf"])
    lay = hostile.walk(bytes(data))
    end = max(info.offset_at for info in lay.infos.values()) + 8
    size = struct.calcsize(width)
    at %= end - size
    struct.pack_into("<" + width, data, at, value % 2 ** (8 * size))
    _parses_or_refuses(read_gguf, tmp_path / "x.gguf", bytes(data))


@EXAMPLES
@given(cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                                                     max_size=4))
def test_safetensors_header_bytes_changed(valid, tmp_path, cut, flips):
    data = bytearray(valid["safetensors"])
    (length,) = struct.unpack_from("<Q", data)
    for at, byte in flips:
        data[8 + at % length] = byte
    data = data[: len(data) - cut % 64]
    _parses_or_refuses(read_safetensors, tmp_path / "x.safetensors", bytes(data))


def test_valid_files_parse(valid, tmp_path):
    (tmp_path / "m.gguf").write_bytes(valid["gguf"])
    header = read_gguf(tmp_path / "m.gguf")
    assert header.architecture == "llama" and len(header.tensors) == 2 + 2 * 9 + 1
    (tmp_path / "m.safetensors").write_bytes(valid["safetensors"])
    entries, _ = read_safetensors(tmp_path / "m.safetensors")
    assert {e.name for e in entries} >= {"model.embed_tokens.weight", "lm_head.weight"}
