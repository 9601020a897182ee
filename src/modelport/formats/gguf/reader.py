"""GGUF -> ModelBundle: names and transforms reversed, any type gguf-py can dequantize.

The header and tensor table are checked first (header.py), then the metadata against the tensors.
Each tensor is read from its byte range and dequantized when asked for, so nothing stays mapped.
The HF config comes from beside the file or `--base-model`; without one it is rebuilt from the
GGUF metadata for the families whose every HF setting the metadata carries.
"""
from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np

from ...architectures import spec_for
from ...architectures.alignment import align
from ...architectures.expected import expected_tensors
from ...architectures.gguf_mapping import GGUFMapping, Target
from ...architectures.hparams import HParams, hparams
from ...architectures.rules import Chain
from ...core.bundle import ModelBundle, TensorRef
from ...core.config_check import check_config, check_layers
from ...core.errors import (
    CorruptInputError,
    ModelFileNotFoundError,
    UnknownArchitectureError,
    quoted,
)
from ..base import ReadOptions
from ..companions import find_companions
from .header import GGUFHeader, TensorInfo
from . import tokenizer_rebuild
from .config_rebuild import rebuilt_config
from .shards import read_model
from .tensor_data import FLOAT_TYPES, decode, raw_rows

BLOCK = re.compile(r"blk\.(\d+)\.")
# HF config key -> the key (after "{arch}.") llama.cpp stores it under, for every architecture
METADATA_KEYS = {"hidden_size": "embedding_length", "intermediate_size": "feed_forward_length",
                 "num_hidden_layers": "block_count", "num_attention_heads": "attention.head_count",
                 "num_key_value_heads": "attention.head_count_kv", "max_position_embeddings": "context_length",
                 "rms_norm_eps": "attention.layer_norm_rms_epsilon", "layer_norm_eps": "attention.layer_norm_epsilon",
                 "rope_theta": "rope.freq_base", "vocab_size": "vocab_size", "head_dim": "attention.key_length"}
# what a config beside the file must agree on with the metadata llama.cpp runs the file by
# (layer counts and sizes are held to the tensors themselves)
# 0 there means "none": a state-space model has no attention heads and no feed-forward (llama.cpp's converter writes 0)
NONE_WHEN_ZERO = ("attention.head_count", "feed_forward_length")
MUST_AGREE = ("{arch}.embedding_length", "{arch}.attention.head_count", "{arch}.attention.head_count_kv")


def metadata_config(header: GGUFHeader) -> tuple[dict, dict[str, str]]:
    """(the HF config values the metadata states, config key -> GGUF key), checked like any config.
    Per-layer arrays (some families vary heads by layer) are left out: they are not one HF value."""
    arch = header.architecture
    found, names = {}, {}
    for name, key in METADATA_KEYS.items():
        value = header.get(f"{arch}.{key}")
        if value is not None and not isinstance(value, list) and not (value == 0 and key in NONE_WHEN_ZERO):
            found[name], names[name] = value, f"{arch}.{key}"
    check_config(found, header.path, names)
    return found, names


def _check_agreement(header: GGUFHeader, mapping: GGUFMapping, hp: HParams, config_path: Path) -> None:
    """A config beside the file against the metadata llama.cpp will run it by: the sizes the file states
    must be what this config would have been written with."""
    written = mapping.metadata_values(hp)
    for key in MUST_AGREE:
        name = key.format(arch=header.architecture)
        stated = header.get(name)
        if name in written and stated is not None and stated != written[name]:
            raise CorruptInputError(f"{name} is {stated}, but {config_path} makes it {written[name]} "
                                    "(which one describes the tensors?)", header.path)


def _check_vocabulary(header: GGUFHeader) -> None:
    """llama.cpp takes the vocabulary size from the token list, and the embedding must have a row for each."""
    tokens = header.get("tokenizer.ggml.tokens")
    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if tokens is not None and embedding is not None and len(embedding.shape) == 2 and embedding.shape[0] != len(tokens):
        raise CorruptInputError(f"tokenizer.ggml.tokens lists {len(tokens)} tokens, but token_embd.weight has "
                                f"{embedding.shape[0]} rows (llama.cpp needs one per token)", header.path)


def _check_blocks(header: GGUFHeader) -> None:
    """The metadata's block count against the blocks the tensor names hold."""
    arch = header.architecture
    blocks = header.get(f"{arch}.block_count")
    if blocks is None:
        layered = next((t.name for t in header.tensors if BLOCK.match(t.name)), None)
        if layered is not None and header.get("general.type", "model") == "model":
            raise CorruptInputError(f"general.architecture is {arch!r}, but there is no {arch}.block_count, and tensor "
                                    f"{quoted(layered)} belongs to a layer (llama.cpp cannot load a {arch} model "
                                    "without it)", header.path)
        return
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 0:
        raise CorruptInputError(f"{arch}.block_count: {blocks!r} is not a layer count", header.path)
    indices = [int(m.group(1)) for m in (BLOCK.match(t.name) for t in header.tensors) if m]
    if indices and max(indices) + 1 != blocks:
        beyond = next((t.name for t in header.tensors if (m := BLOCK.match(t.name)) and int(m.group(1)) >= blocks), None)
        detail = f"tensor {quoted(beyond)} is beyond it" if beyond else f"the tensors hold {max(indices) + 1} blocks"
        raise CorruptInputError(f"{arch}.block_count is {blocks}, but {detail} (the metadata and the tensors "
                                "disagree)", header.path)


def _loader(t: TensorInfo, chain: Chain, hp: HParams, index: int | None) -> tuple[callable, callable | None]:
    """(load, rows) for one HF tensor: the GGUF tensor `t`, or expert `index` of it when it is stacked.
    Rows are read and dequantized alone unless a rule needs the tensor whole (permuted Q/K heads, a
    transpose)."""
    shape = t.shape[1:] if index is not None else t.shape
    n_rows = shape[0] if shape else 1
    parts = t.shape[0] if index is not None else 1                  # experts side by side in the file
    row_bytes = t.nbytes // (parts * max(n_rows, 1))                # a 1-D tensor's "rows" are its values
    first = (index or 0) * n_rows

    def rows(start: int, stop: int) -> np.ndarray:
        raw = raw_rows(t, first + start, stop - start, row_bytes)
        return chain.inverse(decode(raw, t.qtype, (stop - start, *shape[1:]) if shape else shape), hp)

    def load() -> np.ndarray:
        return rows(0, n_rows)

    streams = len(shape) >= 2 and chain.unit(hp, chain.inverse_shape(shape)) == 1   # a part streams as its whole does
    return load, (rows if streams else None)


def _joined(found: list[tuple[Target, TensorRef]], wanted: int, path: Path) -> TensorRef:
    """One HF tensor from the GGUF tensor(s) it went to: the one, or its parts joined in order."""
    if len(found) == 1 and wanted == 1:
        return found[0][1]
    if len(found) != wanted:
        names = ", ".join(target.name for target, _ in found)
        raise CorruptInputError(f"{found[0][1].name} is split into {wanted} tensors, but the file has only {names}",
                                path)
    found = sorted(found, key=lambda part: part[0].chain.take.index)
    take, refs = found[0][0].chain.take, [ref for _, ref in found]
    if len({ref.dtype for ref in refs}) != 1:
        raise CorruptInputError(f"the parts of {refs[0].name} ({', '.join(t.name for t, _ in found)}) differ in "
                                "type", path)

    def load() -> np.ndarray:
        return take.join([ref.load() for ref in refs])

    def rows(start: int, stop: int) -> np.ndarray:
        return take.join([ref.load_rows(start, stop) for ref in refs])

    streams = all(ref.rows is not None for ref in refs)
    return TensorRef(refs[0].name, take.joined_shape([ref.shape for ref in refs]), refs[0].dtype, load, str(path),
                     rows=rows if streams else None)


def _layer_values(header: GGUFHeader, mapping: GGUFMapping, shapes: dict[str, tuple[int, ...]],
                  path: Path) -> dict[str, TensorRef]:
    """The one-value tensors llama.cpp keeps as per-layer metadata arrays, made again from them."""
    refs = {}
    for hf_name, shape in shapes.items():
        place = mapping.layer_value(hf_name)
        values = header.get(place[0]) if place else None
        if place is None or values is None:
            continue
        if not isinstance(values, list) or place[1] >= len(values):
            raise CorruptInputError(f"{place[0]} has no value for layer {place[1]}", path)
        value = np.full(shape, values[place[1]], dtype=np.float32)
        refs[hf_name] = TensorRef(hf_name, shape, "float32", lambda value=value: value, str(path))
    return refs


def checked_header(path: Path) -> GGUFHeader:
    """The header, its tensor table and the metadata llama.cpp sizes the model by, each checked against
    the others: all that can be known of a GGUF without a config (llama.cpp aborts on some of it)."""
    header = read_model(path)
    _check_blocks(header)
    _check_vocabulary(header)
    if header.architecture is not None:
        metadata_config(header)
    return header


def read(path: Path, options: ReadOptions) -> ModelBundle:
    header = checked_header(path)
    try:
        companions = find_companions(path, options.base_model)
        config, tokenizer_files, generation = companions.config, companions.tokenizer_files, companions.generation_config
        notes, config_path = [], companions.config_path
    except ModelFileNotFoundError:
        config, tokenizer_files, generation = rebuilt_config(header), {}, None
        notes, config_path = [f"config rebuilt from GGUF metadata as {config['model_type']}"], None
    if not tokenizer_files and header.get("tokenizer.ggml.tokens"):
        trouble = tokenizer_rebuild.problem(header, options.pre_tokenizer)
        if trouble is None:
            tokenizer_files = tokenizer_rebuild.LazyTokenizerFiles(header, options.pre_tokenizer)
            generation = generation or {key: value for key, value in config.items()
                                        if key in ("bos_token_id", "eos_token_id", "pad_token_id")} or None
            notes.append("tokenizer rebuilt from tokenizer.ggml.* metadata")
        elif options.tokenizer_required:
            raise trouble
        else:
            notes.append("tokenizer not rebuilt: the metadata describes one modelport cannot rebuild")
    check_layers(config, len(header.tensors), path)
    spec = spec_for(config, path).for_config(config)
    if spec.gguf is None:
        raise UnknownArchitectureError(f"no GGUF mapping for {spec.model_type!r}", path)
    mapping, hp = spec.gguf, hparams(config, spec.tie_default)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[mapping.arch]]
    if header.architecture != arch:
        raise CorruptInputError(f"general.architecture is {header.architecture!r}, but the model's config describes "
                                f"a llama.cpp {arch!r} model", path)
    if config_path is not None:
        _check_agreement(header, mapping, hp, config_path)
    expected = expected_tensors(spec, config)
    # every expected HF tensor's place in the file: a GGUF tensor, one expert of a stacked one, or the
    # GGUF tensors its parts went to
    to_hf: dict[str, list[tuple[str, Target]]] = {}
    for hf_name in expected.shapes:
        if hf_name not in expected.tied:
            for target in mapping.targets(hf_name, hp):
                to_hf.setdefault(target.name, []).append((hf_name, target))
    computed = set(mapping.extra_tensors(hp)) if mapping.extra_tensors else set()
    parts: dict[str, list[tuple[Target, TensorRef]]] = {}
    gguf_names: dict[str, str] = {}
    unused: list[str] = []
    for t in header.tensors:
        if t.name not in to_hf:
            if t.name in computed:
                notes.append(f"GGUF tensor {t.name} is recomputed from the config, not read")
            else:
                unused.append(t.name)
            continue
        for hf_name, target in to_hf[t.name]:
            index, chain = target.expert, target.chain
            if index is not None and (len(t.shape) < 2 or index >= t.shape[0]):
                raise CorruptInputError(f"tensor {t.name} has {t.shape[0] if t.shape else 0} experts, "
                                        f"{hf_name} needs expert {index}", path)
            stored = t.shape[1:] if index is not None else t.shape
            dtype = "float32" if chain.changes_dtype else FLOAT_TYPES.get(t.qtype, "float32")
            load, rows = _loader(t, chain, hp, index)
            parts.setdefault(hf_name, []).append(
                (target, TensorRef(hf_name, chain.inverse_shape(stored), dtype, load, str(path), rows=rows)))
            name = t.name if index is None else f"{t.name}[{index}]"
            gguf_names[hf_name] = f"{gguf_names[hf_name]}+{name}" if hf_name in gguf_names else name
    refs = {hf_name: _joined(found, len(mapping.targets(hf_name, hp)), path)
            for hf_name, found in parts.items()}
    refs.update(_layer_values(header, mapping, expected.shapes, path))
    aligned, report = align(refs, expected, path)
    return ModelBundle(config=config, tensors=aligned, source=path, format="gguf", tokenizer_files=tokenizer_files,
                       generation_config=generation, notes=notes + report.notes(),
                       origins={hf: gguf_names.get(src, src) for hf, src in report.origins.items()},
                       unused=unused + [gguf_names.get(n, n) for n in report.unexpected])
