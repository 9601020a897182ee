"""Any ModelBundle -> GGUF in one streaming pass, at any llama.cpp file type, optionally split.

The whole file is planned from shapes first (names, per-tensor types, byte sizes, split points),
so gguf-py writes the header, metadata and tensor infos and every tensor's offset is known. Then each
tensor is streamed in row chunks (whole attention heads when Q/K rows are permuted; every GGML type
quantizes rows independently): worker threads read, transform, cast or quantize a chunk and write it
at its own offset, so both cores stay busy and memory holds a few chunks, not a tensor.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from ...architectures import spec_for
from ...architectures.gguf_mapping import GGUFMapping
from ...architectures.hparams import HParams, hparams
from ...architectures.rules import Chain
from ...core.bundle import ModelBundle, TensorRef, rows_per_block
from ...core.dtypes import resolve_dtype
from ...core.errors import ModelConversionError, UsageError
from . import GGUFOptions
from . import vocab as vocab_mod
from .placed import PlacedData, summary
from .quant_types import ModelShape, asked_quant, choose_types, file_type, nbytes
from .imatrix import Imatrix
from .importance import add_metadata, obtain, refuse_blind, weights
from .quantize import Importance, to_type

if TYPE_CHECKING:
    from .calibrate import CalibrationSettings

logging.getLogger("gguf").setLevel(logging.ERROR)   # gguf-py narrates every key at INFO and skips unused special types at WARNING




@dataclass
class Planned:
    gguf_name: str
    shape: tuple[int, ...]           # as written, rows first (numpy's order); experts first when stacked
    qtype: Q
    sources: list[TensorRef]         # the HF tensor, or one per expert in order; none when computed
    chain: Chain = Chain(())
    computed: np.ndarray | None = None
    kept: bool = False               # the sources' own GGML blocks, copied (chain in their stored orientation)

    @property
    def nbytes(self) -> int:
        return nbytes(self.qtype, self.shape)

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1])) if len(self.shape) >= 2 else 1

    @property
    def source_rows(self) -> int:
        """Rows of the output each source fills (an expert's share of a stacked tensor)."""
        return self.rows // max(1, len(self.sources))


def mapping_for(bundle: ModelBundle) -> GGUFMapping:
    spec = spec_for(bundle.config, bundle.source).for_config(bundle.config)
    if spec.gguf is None:
        from ...architectures import registered
        with_gguf = [s.model_type for s in registered() if s.gguf]
        raise UsageError(f"GGUF output for {spec.model_type!r} is not supported; it is for: {', '.join(with_gguf)}")
    return spec.gguf


def plan(bundle: ModelBundle, mapping: GGUFMapping, hp: HParams, quant: str, has_imatrix: bool = False) -> list[Planned]:
    """Every GGUF tensor in file order, from shapes alone: each HF tensor renamed and reshaped by its
    rules, per-expert tensors stacked (in expert order) into one, computed tensors after them."""
    unmet = mapping.unmet(hp)
    if unmet:
        raise ModelConversionError(f"llama.cpp cannot run this {mapping.arch} model as it is: {'; '.join(unmet)}",
                                   bundle.source)
    planned: dict[str, Planned] = {}
    experts: dict[str, dict[int, TensorRef]] = {}
    unmapped = []
    for ref in bundle:
        if ref.alias_of is not None or ref.name.endswith(mapping.skip) or mapping.layer_value(ref.name):
            continue
        targets = mapping.targets(ref.name, hp)
        if not targets:
            unmapped.append(ref.name)
            continue
        for target in targets:
            name, chain = target.name, target.chain
            if target.expert is None:
                planned[name] = Planned(name, chain.shape(ref.shape), Q.F32, [ref], chain)
                continue
            if name not in planned:
                planned[name] = Planned(name, chain.shape(ref.shape), Q.F32, [], chain)
            experts.setdefault(name, {})[target.expert] = ref
    if unmapped:
        raise ModelConversionError(f"no GGUF name for {len(unmapped)} tensor(s) of {mapping.arch}: "
                                   f"{', '.join(unmapped[:5])}", bundle.source)
    for name, by_index in experts.items():
        p = planned[name]
        if sorted(by_index) != list(range(len(by_index))) or len({r.shape for r in by_index.values()}) != 1:
            raise ModelConversionError(f"{name}: experts {sorted(by_index)} do not stack (missing or unequal)",
                                       bundle.source)
        p.sources = [by_index[i] for i in range(len(by_index))]
        p.shape = (len(p.sources), *p.shape)
    out = list(planned.values())
    for name, tensor in (mapping.extra_tensors(hp) if mapping.extra_tensors else {}).items():
        out.append(Planned(name, tuple(tensor.shape), Q.F32, [], computed=tensor))
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[mapping.arch]]
    # llama-quantize counts the experts the metadata states (Nemotron-H's config names 8 it does not have)
    n_expert = int(hp["experts"] or 0) if callable(mapping.metadata) else \
        int(mapping.metadata_values(hp).get(f"{arch}.expert_count", 0))
    shape = ModelShape(arch, hp.n_layer, hp.n_head, hp.n_head_kv, n_expert)
    types = choose_types({p.gguf_name: p.shape for p in out}, file_type(quant), shape, has_imatrix)
    for p in out:
        p.qtype = types[p.gguf_name]
        stored = _stored_chain(p) if quant in FLOAT_FILES else None
        if stored is not None:
            p.qtype, p.chain, p.kept = Q[p.sources[0].ggml.ggml_type], stored, True     # type: ignore[union-attr]
    return out


FLOAT_FILES = ("f32", "f16", "bf16")


def _stored_chain(p: Planned) -> Chain | None:
    """The rules of `p` as they act on its sources' GGML blocks, when every source has blocks of one type
    and the rules only move whole rows of them: a float file keeps blocks a source already holds (MXFP4
    experts, as llama.cpp's converter does), other types re-quantize the dequantized values."""
    if not p.sources or any(r.ggml is None or r.ggml.ggml_type != p.sources[0].ggml.ggml_type for r in p.sources):
        return None
    return p.chain.swapped()


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
              planned: list[Planned], quant: str, options: GGUFOptions) -> None:
    name = bundle.config.get("_name_or_path") or (bundle.source.name if bundle.source.is_dir() else bundle.source.stem)
    writer.add_name(Path(str(name)).name or "model")
    writer.add_type(gguf.GGUFType.MODEL)
    n_params = sum(int(np.prod(p.shape)) for p in planned)
    writer.add_size_label(gguf.size_label(n_params, n_params, 0, 0))
    kept = any(p.kept for p in planned)         # a float file keeping MXFP4 experts, as llama.cpp's converter names it
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_MXFP4_MOE if kept else file_type(quant)))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    mapping.write_metadata(writer, hp)
    for key, values in layer_values(bundle, mapping, hp).items():
        writer.add_array(key, values)
    pooling = _pooling(bundle)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    vocab = vocab_mod.build(bundle, hp.vocab_size, options.pre_tokenizer)
    vocab_mod.add_to_writer(writer, bundle, vocab, hp.vocab_size)


def layer_values(bundle: ModelBundle, mapping: GGUFMapping, hp: HParams) -> dict[str, list[float]]:
    """The per-layer metadata arrays made of one-value tensors (the tensors are a few bytes each)."""
    found: dict[str, dict[int, float]] = {}
    for ref in bundle:
        place = mapping.layer_value(ref.name)
        if place is not None:
            if ref.numel != 1:
                raise ModelConversionError(f"{ref.name} has {ref.numel} values; llama.cpp reads one per layer "
                                           f"into {place[0]}", bundle.source)
            found.setdefault(place[0], {})[place[1]] = float(np.asarray(ref.load(), dtype=np.float32).reshape(-1)[0])
    for key, values in found.items():
        if sorted(values) != list(range(hp.n_layer)):
            raise ModelConversionError(f"{key}: the model has a value for layers {sorted(values)}, llama.cpp reads "
                                       f"one for each of {hp.n_layer}", bundle.source)
    return {key: [values[layer] for layer in range(hp.n_layer)] for key, values in found.items()}


@dataclass(frozen=True)
class Piece:
    """Source rows [start, stop) of one source (expert `index` of a stacked tensor), which become
    `ratio` output rows each when read alone: one for a 2-D source (its rules keep rows), an expert's
    rows for a 3-D one. A whole source becomes its share of the output, whatever its rules do."""

    planned: Planned
    index: int
    start: int
    stop: int
    ratio: int | None = None        # None: the whole source

    @property
    def whole(self) -> bool:
        return self.ratio is None

    @property
    def output_rows(self) -> tuple[int, int]:
        """[first, last) output rows of the planned tensor this piece fills."""
        base = self.index * self.planned.source_rows
        if self.ratio is None:
            return base, base + self.planned.source_rows
        return base + self.start * self.ratio, base + self.stop * self.ratio

    @property
    def nbytes(self) -> int:
        first, last = self.output_rows
        return self.planned.nbytes * (last - first) // max(1, self.planned.rows)


def pieces(p: Planned, hp: HParams) -> list[Piece]:
    """Row blocks to stream `p` in, source by source (expert by expert): whole heads for permuted Q/K,
    whole rows always, whole experts of a 3-D expert tensor. A source that cannot read rows alone (DCP,
    GGUF), and a tensor a rule needs whole (a 2-D transpose), is given whole: chunking would read it
    once per chunk."""
    if not p.sources:
        return [Piece(p, 0, 0, 1)]
    out = []
    for index, ref in enumerate(p.sources):
        rows = _rows(ref)
        unit = p.chain.unit(hp, ref.shape) if len(ref.shape) >= 2 and ref.rows is not None else None
        if unit is None:
            out.append(Piece(p, index, 0, rows))
            continue
        step = rows_per_block(int(np.prod(ref.shape[1:])), unit)
        ratio = p.source_rows // rows
        out += [Piece(p, index, start, min(rows, start + step), ratio) for start in range(0, rows, step)]
    return out


def _rows(ref: TensorRef) -> int:
    """Rows of a source tensor as the writer counts them: a 1-D tensor is one row."""
    return ref.shape[0] if len(ref.shape) >= 2 else 1


def file_quant(bundle: ModelBundle, options: GGUFOptions) -> str:
    """--quant, else the type --dtype names, else bf16 for a bf16 source and f16 otherwise (as llama.cpp's
    converter chooses); f16 for a quantized source, whose dequantized weights its config calls bf16."""
    asked = asked_quant(options.quant, options.dtype)
    if asked:
        return asked
    if bundle.quantization is not None:
        return "f16"
    return "bf16" if resolve_dtype(options.dtype, bundle.config, (t.dtype for t in bundle)) == "bfloat16" else "f16"


def write(bundle: ModelBundle, path: Path, options: GGUFOptions) -> dict:
    """Write `bundle` as the GGUF file `path` (in a fresh temporary folder), or as its split shards."""
    folder, file_name = path.parent, path.name
    mapping = mapping_for(bundle)
    hp = hparams(bundle.config, spec_for(bundle.config).tie_default)
    quant = file_quant(bundle, options)
    planned = plan(bundle, mapping, hp, quant, options.has_imatrix)
    importance = _importance(bundle, planned, folder, quant, options)
    writer = gguf.GGUFWriter(folder / file_name, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[mapping.arch]],
                             split_max_size=options.split_max_size)
    _metadata(writer, bundle, mapping, hp, planned, quant, options)
    if importance is not None:
        add_metadata(writer, importance[0])
    row_weights = importance[1] if importance is not None else {}
    for p in planned:
        writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    data = PlacedData(writer)

    def produce(piece: Piece) -> int:
        """Make one chunk and write it at its place: workers write in parallel, no copy waits on another."""
        p = piece.planned
        if not p.sources:
            tensor = p.computed
        else:
            ref = p.sources[piece.index]
            if p.kept:
                blocks = ref.ggml.rows(0 if piece.whole else piece.start,            # type: ignore[union-attr]
                                       ref.shape[0] if piece.whole else piece.stop)
                stored = np.ascontiguousarray(p.chain.forward(blocks, hp, full_rows=_rows(ref)))
                at = piece.output_rows[0] * (p.nbytes // p.rows)
                return _checked(p, piece, data.put(p.gguf_name, at, stored), bundle.source)
            chunk = ref.load() if piece.whole else ref.load_rows(piece.start, piece.stop)
            tensor = p.chain.forward(chunk, hp, full_rows=_rows(ref))
            if tensor.ndim > 2:                     # whole experts of a 3-D tensor: their rows, in order
                tensor = tensor.reshape(-1, tensor.shape[-1])
        first = piece.output_rows[0]
        at = first * (p.nbytes // p.rows)
        # a tensor a source could only give whole is still converted a row block at a time (rows are
        # independent in every GGML type), so only the source tensor is ever held whole
        step = rows_per_block(int(np.prod(tensor.shape[1:]))) if tensor.ndim >= 2 else None
        done, weight = 0, row_weights.get(p.gguf_name)
        for start in range(0, tensor.shape[0], step) if step else [0]:
            block = tensor[start:start + step] if step else tensor
            rows = weight.at(first + start) if weight is not None else None
            done += data.put(p.gguf_name, at + done, to_type(block, p.qtype, threads=1, scratch=True, importance=rows))
        return _checked(p, piece, done, bundle.source)

    data.fill((piece for p in planned for piece in pieces(p, hp)), produce, options.threads, f"writing {file_name}")
    return {**summary(folder, (p.qtype for p in planned)), "dtype": quant}


def _checked(p: Planned, piece: Piece, done: int, source: Path) -> int:
    if done != piece.nbytes:
        raise ModelConversionError(f"{p.gguf_name}: {done} bytes for rows {piece.start}-{piece.stop} of part "
                                   f"{piece.index}, planned {piece.nbytes}", source)
    return done
def _importance(bundle: ModelBundle, planned: list[Planned], folder: Path, quant: str,
                options: GGUFOptions) -> tuple[Imatrix, dict[str, Importance]] | None:
    """The imatrix of this write and each tensor's weights from it; None without one (and then no tensor
    may need one). A corpus is run by llama.cpp on an F16 GGUF of the bundle made inside the output's
    temporary folder and removed before the output is written."""
    ftype = file_type(quant)
    if not options.has_imatrix:
        refuse_blind({p.gguf_name: p.qtype for p in planned}, ftype, quant)
        return None

    def calibrated(settings: CalibrationSettings) -> Imatrix:
        from .calibrate import compute
        work = folder / ".imatrix-model"
        work.mkdir()
        try:
            write(bundle, work / "model-f16.gguf", GGUFOptions("f16", None, pre_tokenizer=options.pre_tokenizer,
                                                               threads=options.threads))
            return compute(work / "model-f16.gguf", settings, options.threads)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    found = obtain(options, calibrated)
    return found, weights(found, {p.gguf_name: p.shape for p in planned}, {p.gguf_name: p.qtype for p in planned},
                          ftype)


def describe(bundle: ModelBundle, options: GGUFOptions) -> list[dict]:
    """--debug-params: each source tensor's GGUF name, shape as written and GGML type."""
    planned = plan(bundle, mapping_for(bundle), hparams(bundle.config, spec_for(bundle.config).tie_default),
                   file_quant(bundle, options), options.has_imatrix)
    return [{"source": bundle.origins.get(ref.name, ref.name) if ref else None, "hf_name": ref.name if ref else None,
             "target": p.gguf_name if len(p.sources) < 2 else f"{p.gguf_name}[{i}]", "shape": list(p.shape),
             "dtype": ref.dtype if ref else "float32", "target_type": p.qtype.name}
            for p in planned for i, ref in (enumerate(p.sources) if p.sources else [(0, None)])]
