"""Any ModelBundle -> GGUF in one streaming pass, at any llama.cpp file type, optionally split.

The whole file is planned from shapes first (names, per-tensor types, byte sizes, split points),
so gguf-py can write the header; then tensors are loaded, transformed (Q/K permutation, transposes,
norm offsets), cast or quantized and written one at a time with a small in-flight window.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

from ...architectures import spec_for
from ...architectures.gguf_mapping import GGUFMapping, permute_rows
from ...bundle import ModelBundle, TensorRef
from ...errors import ModelConversionError, UsageError
from ...progress import progress_bar
from ...stream import prefetch
from . import vocab as vocab_mod
from .hparams import HParams, hparams
from .quant_types import ModelShape, choose_types, file_type, nbytes
from .quantize import to_type

logging.getLogger("gguf").setLevel(logging.ERROR)   # gguf-py narrates every key at INFO and skips unused special types at WARNING


@dataclass
class GGUFWriteOptions:
    quant: str = "f16"
    split_max_size: int = 0
    threads: int = 2
    window_bytes: int = 256 * 2**20
    pre_tokenizer: str | None = None


@dataclass
class Planned:
    gguf_name: str
    shape: tuple[int, ...]           # as torch stores it (rows first)
    qtype: Q
    ref: TensorRef | None            # None for tensors computed from the config (rope factors)
    computed: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return nbytes(self.qtype, self.shape)


def mapping_for(bundle: ModelBundle) -> GGUFMapping:
    spec = spec_for(bundle.config, bundle.source)
    if spec.gguf is None:
        from ...architectures import supported_model_types
        with_gguf = [t for t in supported_model_types() if spec_for({"model_type": t}).gguf]
        raise UsageError(f"GGUF output for {spec.model_type!r} is not supported; it is for: {', '.join(with_gguf)}")
    return spec.gguf


def transform(name: str, tensor: torch.Tensor, mapping: GGUFMapping, hp: HParams) -> torch.Tensor:
    if mapping.permute_qk:
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            tensor = permute_rows(tensor, hp.n_head)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            tensor = permute_rows(tensor, hp.n_head_kv)
    if tensor.ndim == 2 and name.endswith(mapping.transpose):
        tensor = tensor.t()
    if mapping.norm_offset and name.endswith("norm.weight"):
        tensor = tensor.float() + mapping.norm_offset
    return tensor


def plan(bundle: ModelBundle, mapping: GGUFMapping, hp: HParams, quant: str) -> list[Planned]:
    arch = gguf.MODEL_ARCH[mapping.arch]
    names = gguf.get_tensor_name_map(arch, hp.n_layer)
    planned: list[Planned] = []
    unmapped = []
    for ref in bundle:
        if ref.alias_of is not None or ref.name.endswith(mapping.skip):
            continue
        target = names.get_name(ref.name, try_suffixes=(".weight", ".bias"))
        if target is None:
            unmapped.append(ref.name)
            continue
        shape = tuple(reversed(ref.shape)) if len(ref.shape) == 2 and ref.name.endswith(mapping.transpose) else ref.shape
        planned.append(Planned(target, shape, Q.F32, ref))
    if unmapped:
        raise ModelConversionError(f"no GGUF name for {len(unmapped)} tensor(s) of {mapping.arch}: "
                                   f"{', '.join(unmapped[:5])}", bundle.source)
    for name, tensor in (mapping.extra_tensors(hp) if mapping.extra_tensors else {}).items():
        planned.append(Planned(name, tuple(tensor.shape), Q.F32, None, tensor))
    shape = ModelShape(gguf.MODEL_ARCH_NAMES[arch], hp.n_layer, hp.n_head, hp.n_head_kv)
    types = choose_types({p.gguf_name: p.shape for p in planned}, file_type(quant), shape)
    for p in planned:
        p.qtype = types[p.gguf_name]
    return planned


def _pooling(bundle: ModelBundle) -> int | None:
    """sentence-transformers' pooling mode, when the model folder says how it pools."""
    folders = {bundle.source if bundle.source.is_dir() else bundle.source.parent}
    folders |= {p.parent for p in bundle.tokenizer_files.values()}
    for folder in folders:
        config = folder / "1_Pooling" / "config.json"
        if config.is_file():
            modes = json.loads(config.read_text())
            if modes.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if modes.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            if modes.get("pooling_mode_lasttoken"):
                return gguf.PoolingType.LAST
    return None


def _metadata(writer: gguf.GGUFWriter, bundle: ModelBundle, mapping: GGUFMapping, hp: HParams,
              planned: list[Planned], options: GGUFWriteOptions) -> None:
    name = bundle.config.get("_name_or_path") or (bundle.source.name if bundle.source.is_dir() else bundle.source.stem)
    writer.add_name(Path(str(name)).name or "model")
    writer.add_type(gguf.GGUFType.MODEL)
    n_params = sum(int(np.prod(p.shape)) for p in planned)
    writer.add_size_label(gguf.size_label(n_params, n_params, 0, 0))
    writer.add_file_type(int(file_type(options.quant)))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    mapping.metadata(writer, hp)
    pooling = _pooling(bundle)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    vocab = vocab_mod.build(bundle, hp.vocab_size, options.pre_tokenizer, mapping.default_pre)
    vocab_mod.add_to_writer(writer, bundle, vocab, hp.vocab_size)


def write(bundle: ModelBundle, folder: Path, file_name: str, options: GGUFWriteOptions) -> dict:
    """Write `bundle` as GGUF file(s) named after `file_name` inside `folder` (a fresh temp folder)."""
    mapping = mapping_for(bundle)
    hp = hparams(bundle.config)
    planned = plan(bundle, mapping, hp, options.quant)
    writer = gguf.GGUFWriter(folder / file_name, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[mapping.arch]],
                             split_max_size=options.split_max_size)
    _metadata(writer, bundle, mapping, hp, planned, options)
    for p in planned:
        writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    def produce(p: Planned) -> np.ndarray:
        tensor = p.computed if p.ref is None else transform(p.ref.name, p.ref.load(), mapping, hp)
        return to_type(tensor, p.qtype, options.threads)

    total = sum(p.nbytes for p in planned)
    with progress_bar(total, f"writing {file_name}") as bar:
        for p, data in prefetch(planned, produce, window=2, threads=1, size=lambda p: p.nbytes,
                                budget=options.window_bytes):
            if data.nbytes != p.nbytes:
                raise ModelConversionError(f"{p.gguf_name}: {data.nbytes} bytes, planned {p.nbytes}", bundle.source)
            writer.write_tensor_data(data)
            bar.update(p.nbytes)
    writer.close()
    files = sorted(f.name for f in folder.iterdir())
    return {"files": files, "bytes_written": sum((folder / f).stat().st_size for f in files),
            "tensors": len(planned), "types": _type_counts(planned)}


def _type_counts(planned: list[Planned]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.qtype.name] = counts.get(p.qtype.name, 0) + 1
    return counts
