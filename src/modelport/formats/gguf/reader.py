"""GGUF -> ModelBundle: names and transforms reversed, any type gguf-py can dequantize.

Each tensor is read from its byte range and dequantized when asked for, so nothing stays mapped.
The HF config comes from beside the file or `--base-model`; without one it is rebuilt from the
GGUF metadata for the families whose every HF setting the metadata carries.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

from ...architectures import spec_for
from ...architectures.expected import expected_tensors
from ...architectures.gguf_mapping import GGUFMapping
from ...bundle import ModelBundle, TensorRef
from ...checkpoint_keys import align
from ...companions import find_companions
from ...errors import CorruptInputError, ModelFileNotFoundError, UnknownArchitectureError
from .hparams import hparams

TORCH_TYPES = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}
# llama.cpp arch -> (HF model_type, HF class) for configs rebuilt from metadata
REBUILDABLE = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
               "qwen3": ("qwen3", "Qwen3ForCausalLM")}


def _open(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:   # gguf-py raises ValueError, struct.error, IndexError... on damage
        raise CorruptInputError(f"not a readable GGUF file (truncated or corrupt): {exc}", path) from exc


def _field(reader: gguf.GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def rebuilt_config(reader: gguf.GGUFReader, path: Path) -> dict:
    arch = _field(reader, "general.architecture")
    if arch not in REBUILDABLE:
        raise ModelFileNotFoundError(f"no config.json for this {arch} GGUF; pass --base-model DIR with the HF config "
                                     f"(configs are rebuilt from metadata only for {', '.join(REBUILDABLE)})", path)
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ModelFileNotFoundError("this GGUF uses scaled rope (rope_freqs); pass --base-model DIR with the HF "
                                     "config, whose rope_scaling the file does not spell out", path)
    model_type, cls = REBUILDABLE[arch]
    k = lambda name, default=None: _field(reader, f"{arch}.{name}", default)  # noqa: E731
    n_head = k("attention.head_count")
    n_embd = k("embedding_length")
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    config = {
        "architectures": [cls], "model_type": model_type, "hidden_size": n_embd,
        "intermediate_size": k("feed_forward_length"), "num_hidden_layers": k("block_count"),
        "num_attention_heads": n_head, "num_key_value_heads": k("attention.head_count_kv", n_head),
        "max_position_embeddings": k("context_length"), "rms_norm_eps": k("attention.layer_norm_rms_epsilon"),
        "rope_theta": k("rope.freq_base", 10000.0), "vocab_size": k("vocab_size") or len(tokens),
        "head_dim": k("attention.key_length", n_embd // n_head),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    return {key: value for key, value in config.items() if value is not None}


def _loader(path: Path, t: gguf.ReaderTensor, hf_name: str, mapping: GGUFMapping, hp) -> tuple[callable, callable | None]:
    """(load, rows) for one tensor. Rows are read and dequantized alone (every GGML type stores whole
    rows of blocks) unless the tensor must be rearranged whole: permuted Q/K heads, transposed weights."""
    shape = tuple(int(d) for d in reversed(t.shape))       # GGUF lists ne (fastest first)
    qtype, offset, size = t.tensor_type, int(t.data_offset), int(t.n_bytes)
    n_rows = shape[0] if shape else 1
    row_bytes = size // max(n_rows, 1)

    def decode(start: int, stop: int) -> torch.Tensor:
        count = (stop - start) * row_bytes
        raw = np.fromfile(path, dtype=np.uint8, count=count, offset=offset + start * row_bytes)
        if raw.size != count:
            raise CorruptInputError(f"tensor {t.name} is cut short", path)
        part = (stop - start, *shape[1:]) if shape else shape
        if qtype in TORCH_TYPES:
            return torch.frombuffer(bytearray(raw), dtype=TORCH_TYPES[qtype]).reshape(part)
        rows = raw.reshape(stop - start, -1)
        return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(rows, qtype))).reshape(part)

    def load() -> torch.Tensor:
        return mapping.from_gguf(hf_name, decode(0, n_rows), hp)

    def rows(start: int, stop: int) -> torch.Tensor:
        return mapping.from_gguf(hf_name, decode(start, stop), hp)

    whole_only = len(shape) < 2 or mapping.permuted_heads(hf_name, hp) is not None or hf_name.endswith(mapping.transpose)
    return load, (None if whole_only else rows)


def read(path: Path, base_model: Path | None = None, trust_remote_code: bool = False) -> ModelBundle:
    reader = _open(path)
    try:
        companions = find_companions(path, base_model)
        config, tokenizer_files, generation = companions.config, companions.tokenizer_files, companions.generation_config
        notes = []
    except ModelFileNotFoundError:
        config, tokenizer_files, generation = rebuilt_config(reader, path), {}, None
        notes = ["config rebuilt from GGUF metadata; no tokenizer files (pass --base-model to copy them)"]
    spec = spec_for(config, path)
    if spec.gguf is None:
        raise UnknownArchitectureError(f"no GGUF mapping for {spec.model_type!r}", path)
    mapping, hp = spec.gguf, hparams(config)
    expected = expected_tensors(spec, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[mapping.arch], hp.n_layer)
    to_hf: dict[str, str] = {}
    for hf_name in expected.shapes:
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is not None:
            to_hf.setdefault(gguf_name, hf_name)
    refs: dict[str, TensorRef] = {}
    gguf_names: dict[str, str] = {}
    for t in reader.tensors:
        hf_name = to_hf.get(t.name)
        if hf_name is None:
            notes.append(f"ignored GGUF tensor {t.name} (computed from the config in HF)")
            continue
        shape = mapping.gguf_shape(hf_name, tuple(int(d) for d in reversed(t.shape)))   # transposing is its own inverse
        dtype = TORCH_TYPES.get(t.tensor_type, torch.float32)
        if mapping.norm_offset and hf_name.endswith("norm.weight"):
            dtype = torch.float32
        load, rows = _loader(path, t, hf_name, mapping, hp)
        refs[hf_name] = TensorRef(hf_name, shape, dtype, load, str(path), rows=rows)
        gguf_names[hf_name] = t.name
    aligned, report = align(refs, expected, path)
    return ModelBundle(config=config, tensors=aligned, source=path, format="gguf", tokenizer_files=tokenizer_files,
                       generation_config=generation, notes=notes + report.notes(),
                       origins={hf: gguf_names.get(src, src) for hf, src in report.origins.items()},
                       unused=[gguf_names.get(n, n) for n in report.unexpected])
