"""Damaged and hostile inputs made from a valid one: the mutation classes of the hostile-input tests.

Each mutation is a small edit at a known place (a count, a type code, an offset, a key's value), so
every class is sure to make the input invalid; `random_*` classes pick the place and the value from
a seeded generator. A GGUF's structure is walked here (test code only) to know where each field is.
"""
from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
EXTREME = [0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1]


@dataclass
class KV:
    key: str
    type_at: int                 # offset of the value type code
    value_at: int                # offset of the scalar value, or of the array's item type
    vtype: int
    item_type: int | None = None
    count_at: int | None = None  # arrays: offset of the count
    strings: list[int] = field(default_factory=list)   # string values: offsets of their length fields


@dataclass
class Info:
    name: str
    ndims_at: int
    dims_at: int
    ndims: int
    type_at: int
    offset_at: int


@dataclass
class Layout:
    n_tensors_at: int = 16 - 8
    n_kv_at: int = 16
    kvs: dict[str, KV] = field(default_factory=dict)
    infos: dict[str, Info] = field(default_factory=dict)


def walk(data: bytes) -> Layout:
    """Where each field of a valid GGUF sits."""
    lay = Layout()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, at)
        return data[at + 8:at + 8 + n].decode(), at + 8 + n

    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", data, pos)
        kv = KV(key, pos, pos + 4, vtype)
        pos += 4
        if vtype == 8:
            kv.strings.append(pos)
            _, pos = string(pos)
        elif vtype == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            kv.item_type, kv.count_at = item, pos + 4
            pos += 12
            for _ in range(count):
                if item == 8:
                    kv.strings.append(pos)
                    _, pos = string(pos)
                else:
                    pos += SCALAR[item]
        else:
            pos += SCALAR[vtype]
        lay.kvs[key] = kv
    for _ in range(n_tensors):
        name, pos = string(pos)
        (ndims,) = struct.unpack_from("<I", data, pos)
        info = Info(name, pos, pos + 4, ndims, pos + 4 + 8 * ndims, pos + 8 + 8 * ndims)
        pos = info.offset_at + 8
        lay.infos[name] = info
    return lay


def put(data: bytearray, at: int, fmt: str, value) -> None:
    struct.pack_into("<" + fmt, data, at, value)


def get(data: bytes, at: int, fmt: str):
    return struct.unpack_from("<" + fmt, data, at)[0]


def tensor_offsets(data: bytes, lay: Layout) -> dict[str, int]:
    return {name: get(data, info.offset_at, "Q") for name, info in lay.infos.items()}


def gguf_mutations(data: bytes, seed: int = 0) -> dict[str, bytes]:
    """{case name: mutated file}: every class the hostile-input issue lists, each sure to be invalid."""
    lay = walk(data)
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    names = list(lay.infos)
    offsets = tensor_offsets(data, lay)
    arch = next(kv for kv in lay.kvs.values() if kv.key == "general.architecture")
    arch_name = data[arch.strings[0] + 8: arch.strings[0] + 8 + get(data, arch.strings[0], "Q")].decode()

    def mutate(name: str, edit) -> None:
        copy = bytearray(data)
        edit(copy)
        out[name] = bytes(copy)

    tokens = lay.kvs["tokenizer.ggml.tokens"]
    mutate("tokens-array-of-arrays", lambda d: put(d, tokens.value_at, "I", 9))
    mutate("tokens-count-huge", lambda d: put(d, tokens.count_at, "Q", 2**40))
    mutate("tokens-string-length-huge", lambda d: put(d, tokens.strings[3], "Q", 2**62))
    mutate("string-not-utf8", lambda d: d.__setitem__(arch.strings[0] + 8, 0xFF))
    for value in (2**31, 2**32 - 1):
        mutate(f"block-count-{value}", lambda d, v=value: put(d, lay.kvs[f"{arch_name}.block_count"].value_at, "I", v))
    mutate("block-count-lowered", lambda d: put(d, lay.kvs[f"{arch_name}.block_count"].value_at, "I",
                                               get(data, lay.kvs[f"{arch_name}.block_count"].value_at, "I") - 1))
    for key in (f"{arch_name}.attention.head_count", f"{arch_name}.attention.head_count_kv",
                f"{arch_name}.embedding_length"):
        if key in lay.kvs:
            mutate(f"zero-{key}", lambda d, k=key: put(d, lay.kvs[k].value_at, "I", 0))
    eps = f"{arch_name}.attention.layer_norm_rms_epsilon"
    if eps in lay.kvs:
        mutate("nan-epsilon", lambda d: put(d, lay.kvs[eps].value_at, "f", float("nan")))
    mutate("kv-type-unknown", lambda d: put(d, lay.kvs[f"{arch_name}.block_count"].type_at, "I", 77))
    mutate("n-tensors-lowered", lambda d: put(d, lay.n_tensors_at, "Q", len(names) - 1))
    mutate("n-tensors-raised", lambda d: put(d, lay.n_tensors_at, "Q", len(names) + 1))
    mutate("n-kv-huge", lambda d: put(d, lay.n_kv_at, "Q", 2**62))
    a, b = names[1], names[3]
    mutate("offset-of-another-tensor", lambda d: put(d, lay.infos[b].offset_at, "Q", offsets[a]))
    mutate("offset-unaligned", lambda d: put(d, lay.infos[b].offset_at, "Q", offsets[b] + 1))
    mutate("offset-wraps", lambda d: put(d, lay.infos[b].offset_at, "Q", 2**64 - 32))
    mutate("offset-inside-another", lambda d: put(d, lay.infos[b].offset_at, "Q", offsets[a] + 32))
    f32 = [n for n in names if get(data, lay.infos[n].type_at, "I") == 0 and get(data, lay.infos[n].dims_at, "Q") % 32 == 0]
    for code, label in ((1, "f16"), (2, "q4_0"), (8, "q8_0"), (30, "bf16")):
        target = rng.choice(f32)
        mutate(f"type-f32-to-{label}-{target}", lambda d, t=target, c=code: put(d, lay.infos[t].type_at, "I", c))
    last = names[-1]
    mutate("last-tensor-type-shrunk", lambda d: put(d, lay.infos[last].type_at, "I", 1))
    mutate("type-unknown", lambda d: put(d, lay.infos[a].type_at, "I", 99))
    mutate("dims-doubled", lambda d: put(d, lay.infos[a].dims_at, "Q", get(data, lay.infos[a].dims_at, "Q") * 2))
    mutate("dims-huge", lambda d: put(d, lay.infos[a].dims_at, "Q", 2**62))
    mutate("ndims-5", lambda d: put(d, lay.infos[a].ndims_at, "I", 5))
    mutate("truncated-in-data", lambda d: d.__delitem__(slice(len(data) - 100, None)))
    mutate("truncated-in-header", lambda d: d.__delitem__(slice(lay.infos[a].offset_at, None)))
    mutate("bad-magic", lambda d: d.__setitem__(slice(0, 4), b"GGUG"))
    mutate("version-1", lambda d: put(d, 4, "I", 1))
    other = {"llama": "qwen2"}.get(arch_name, "llama")
    assert len(other) == len(arch_name), "pick an architecture name of the same length"
    name_at = arch.strings[0] + 8
    mutate("architecture-other-family", lambda d: d.__setitem__(slice(name_at, name_at + len(other)), other.encode()))
    for i in range(8):        # one structural field set to an extreme value
        info = lay.infos[rng.choice(names)]
        at, fmt = rng.choice([(info.dims_at, "Q"), (info.type_at, "I"), (info.offset_at, "Q"), (info.ndims_at, "I")])
        value = rng.choice(EXTREME)
        if value != get(data, at, fmt) and value < 2 ** (8 * struct.calcsize(fmt)):
            mutate(f"random-extreme-{i}", lambda d, at=at, fmt=fmt, v=value: put(d, at, fmt, v))
    return out


def safetensors_mutations(data: bytes, seed: int = 0) -> dict[str, bytes]:
    """{case name: mutated file} for one safetensors file, each sure to be invalid."""
    rng = random.Random(seed)
    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + length])
    body = data[8 + length:]
    names = [k for k in header if k != "__metadata__"]
    out: dict[str, bytes] = {}

    def rebuild(h: dict | str, payload: bytes = body) -> bytes:
        raw = (h if isinstance(h, str) else json.dumps(h)).encode()
        return struct.pack("<Q", len(raw)) + raw + payload

    def edited(edit) -> dict:
        h = json.loads(json.dumps(header))
        edit(h)
        return h

    a, b = sorted(names, key=lambda n: header[n]["data_offsets"][0])[1:3]
    out["header-length-huge"] = struct.pack("<Q", 2**60) + data[8:]
    out["header-length-past-end"] = struct.pack("<Q", len(data)) + data[8:]
    out["header-not-json"] = rebuild("{" + json.dumps(header)[1:-1][:-5])
    out["header-a-list"] = rebuild(json.dumps([1, 2, 3]))
    out["header-nested-deep"] = rebuild('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    out["dtype-f32-to-f16"] = rebuild(edited(lambda h: h[a].update(dtype="F16")))
    out["dtype-unknown"] = rebuild(edited(lambda h: h[a].update(dtype="F7")))
    out["shape-doubled"] = rebuild(edited(lambda h: h[a].update(shape=[2 * d for d in h[a]["shape"]])))
    out["shape-negative"] = rebuild(edited(lambda h: h[a].update(shape=[-1] + h[a]["shape"][1:])))
    out["shape-strings"] = rebuild(edited(lambda h: h[a].update(shape=["2"] * len(h[a]["shape"]))))
    out["offsets-overlap"] = rebuild(edited(lambda h: h[b].update(data_offsets=[h[a]["data_offsets"][0],
                                                                                 h[a]["data_offsets"][0] + h[b]["data_offsets"][1] - h[b]["data_offsets"][0]])))
    out["offsets-past-end"] = rebuild(edited(lambda h: h[b].update(data_offsets=[h[b]["data_offsets"][0] + 2**40,
                                                                                 h[b]["data_offsets"][1] + 2**40])))
    out["duplicate-name"] = rebuild(json.dumps(header)[:-1] + f', "{a}": ' + json.dumps(header[a]) + "}")
    out["name-100kb"] = rebuild(edited(lambda h: h.__setitem__("x" * 100_000, h.pop(a))))
    out["truncated"] = data[: len(data) - rng.randint(1, 64)]
    out["header-only"] = data[: 8 + length]
    out["empty"] = b""
    out["metadata-not-strings"] = rebuild(edited(lambda h: h.__setitem__("__metadata__", {"format": 3})))
    return out


CONFIG_VALUES = {
    "num_hidden_layers": ["2", 2.5, None, True, -1, 0, 2147483648, 1e30],
    "num_attention_heads": [0, 3],           # 3 does not divide hidden_size 64
    "num_key_value_heads": [0, 3],
    "hidden_size": [0, -64],
    "tie_word_embeddings": ["no", 1],
    "dtype": ["float7"],
    "bos_token_id": [-1, "x"],
    "max_position_embeddings": [-1, 10**15],
    "rms_norm_eps": [float("nan"), float("inf"), -1e-5],
    "rope_theta": [0, "10000"],
    "vocab_size": [None, 1.5],
}


def config_mutations(config: dict) -> dict[str, str]:
    """{case name: config.json text}, each with one value no model can have."""
    out = {}
    for key, values in CONFIG_VALUES.items():
        for value in values:
            out[f"{key}={value!r}"] = json.dumps({**config, key: value})
    out["rope-type-unknown"] = json.dumps({**config, "rope_scaling": {"rope_type": "wobbly", "factor": 2.0}})
    out["nested-100k-deep"] = '{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    out["not-an-object"] = "[1, 2]"
    out["not-json"] = json.dumps(config)[:-10]
    return out


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_text if isinstance(data, str) else path.write_bytes)(data)
    return path
