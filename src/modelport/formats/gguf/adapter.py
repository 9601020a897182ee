"""A LoRA adapter bundle -> a GGUF LoRA adapter that llama.cpp loads beside its base model's GGUF.

The file is what llama.cpp's `convert_lora_to_gguf.py` writes: `general.type = adapter`,
`adapter.type = lora`, `adapter.lora.alpha`, and for each adapted base tensor its GGUF name with
`.lora_a` (rank x in) and `.lora_b` (out x rank). The family's tensor rules reach A and B as they reach W
(rules.Rule.lora: a Q/K head permutation or a fused split reorders B's rows, a transpose swaps the pair);
per-expert pairs stack like the experts. llama.cpp scales each pair by alpha / rank, so alpha is written
such that this is PEFT's scale (alpha * sqrt(rank) with rsLoRA); a module whose scale differs
(`rank_pattern`, `alpha_pattern`) has the ratio folded into its B. An embedding's pair is stored for
row lookup, A transposed (llama.cpp's llm_build_inp_embd).

What a GGUF LoRA cannot express is refused with the reason: DoRA's per-row rescaling, tensors saved
whole (`modules_to_save`, trained biases), rules that are not a reordering (an offset). Merging
(`--merge-adapter`) takes all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ...architectures import spec_for
from ...architectures.gguf_mapping import GGUFMapping
from ...architectures.hparams import HParams, hparams
from ...architectures.rules import Chain
from ...core.adapter import LoraAdapter, LoraModule
from ...core.bundle import ModelBundle
from ...core.errors import ModelConversionError, UsageError
from . import GGUFOptions
from .placed import PlacedData, summary
from .quant_types import asked_quant, nbytes
from .quantize import to_type
from .writer import mapping_for

TYPES = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
         "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}   # llama.cpp's --outtype
EMBEDDING = "token_embd.weight"


@dataclass
class Pair:
    """One GGUF tensor's LoRA pair: from one module, or one per expert (stacked, expert-major)."""

    name: str                        # the base tensor's GGUF name
    modules: list[LoraModule]
    chain: Chain
    a_shape: tuple[int, ...] = ()
    b_shape: tuple[int, ...] = ()


def write(bundle: ModelBundle, path: Path, options: GGUFOptions) -> dict:
    adapter = bundle.adapter
    _refuse_inexpressible(adapter)
    if not bundle.config:
        raise UsageError("a LoRA adapter converts with its base model's config: pass --base-model DIR", adapter.path)
    quant = asked_quant(options.quant, options.dtype) or "f32"
    if quant not in TYPES:
        raise UsageError(f"--quant {quant}: a GGUF LoRA adapter is written as {', '.join(TYPES)} "
                         "(llama.cpp's converter's types)")
    mapping = mapping_for(bundle)
    hp = hparams(bundle.config, spec_for(bundle.config).tie_default)
    alpha = written_alpha(adapter)
    pairs = plan(adapter, mapping, hp)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[mapping.arch]])
    qtypes = []
    for p in pairs:
        for suffix, shape in ((".lora_a", p.a_shape), (".lora_b", p.b_shape)):
            qtype = _qtype(TYPES[quant], shape)
            qtypes.append(qtype)
            writer.add_tensor_info(p.name + suffix, shape, np.dtype(np.float32), nbytes(qtype, shape), raw_dtype=qtype)
    _metadata(writer, adapter, alpha)
    data = PlacedData(writer)
    types = dict(zip((p.name + s for p in pairs for s in (".lora_a", ".lora_b")), qtypes))

    def produce(p: Pair) -> int:
        a, b = tensors(p, hp, alpha, adapter)
        return (data.put(p.name + ".lora_a", 0, to_type(a, types[p.name + ".lora_a"], threads=1))
                + data.put(p.name + ".lora_b", 0, to_type(b, types[p.name + ".lora_b"], threads=1)))

    data.fill(pairs, produce, options.threads, f"writing {path.name}")
    if adapter.copies:      # as llama.cpp's converter does: the base GGUF has them
        bundle.notes.append(f"left out {len(adapter.copies)} base tensor(s) the adapter saves a copy of "
                            f"({', '.join(sorted(adapter.copies)[:3])}); the base GGUF has its own")
    return {**summary(path.parent, qtypes), "dtype": quant}


def describe(bundle: ModelBundle, options: GGUFOptions) -> list[dict]:
    """--debug-params: each lora_A/lora_B (per expert when stacked) -> its GGUF tensor, shape as written, type."""
    mapping = mapping_for(bundle)
    hp = hparams(bundle.config, spec_for(bundle.config).tie_default)
    qtype = TYPES.get(asked_quant(options.quant, options.dtype) or "f32", TYPES["f32"])
    rows = []
    for p in plan(bundle.adapter, mapping, hp):
        for i, module in enumerate(p.modules):
            for ref, suffix, shape in ((module.a, ".lora_a", p.a_shape), (module.b, ".lora_b", p.b_shape)):
                target = p.name + suffix + (f"[{i}]" if len(p.modules) > 1 else "")
                rows.append({"source": ref.name, "hf_name": module.target, "target": target, "shape": list(shape),
                             "dtype": ref.dtype, "target_type": _qtype(qtype, shape).name})
    return rows


def _refuse_inexpressible(adapter: LoraAdapter) -> None:
    merge = "merge it into its base instead (convert BASE OUT --merge-adapter ADAPTER)"
    if adapter.dora:
        raise UsageError(f"a DoRA adapter rescales each row of W + BA to a learned norm, which a GGUF LoRA cannot "
                         f"express; {merge}", adapter.path)
    if adapter.whole:
        names = sorted(adapter.whole)
        raise UsageError(f"saves {len(names)} tensor(s) whole ({', '.join(names[:3])}: modules_to_save or trained "
                         f"biases), which a GGUF LoRA cannot carry (it only adds B·A); {merge}", adapter.path)


def _qtype(qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
    """Q8_0 needs rows of whole blocks; llama.cpp's converter falls back to F16 for others (a B of rank 8)."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def written_alpha(adapter: LoraAdapter) -> float:
    """The alpha llama.cpp divides by each pair's rank: PEFT's lora_alpha, times sqrt(r) with rsLoRA."""
    return adapter.alpha * math.sqrt(adapter.rank) if adapter.rslora else adapter.alpha


def plan(adapter: LoraAdapter, mapping: GGUFMapping, hp: HParams) -> list[Pair]:
    """Every pair in the order llama.cpp's converter writes them (modules by their PEFT name), shapes known."""
    pairs: dict[str, Pair] = {}
    experts: dict[str, dict[int, LoraModule]] = {}
    for module in sorted(adapter.modules, key=lambda m: m.a.name):
        if module.target.endswith(mapping.skip):
            raise ModelConversionError(f"adapts {module.target}, which llama.cpp does not use", adapter.path)
        targets = mapping.targets(module.target, hp)
        if not targets:
            raise ModelConversionError(f"no GGUF name for {module.target}, which the adapter adapts", adapter.path)
        for target in targets:
            if module.embedding != (target.name == EMBEDDING) or (module.embedding and target.chain.rules):
                raise ModelConversionError(f"{module.target}: llama.cpp applies a LoRA to an embedding only on "
                                           f"its input token embedding", adapter.path)
            if target.expert is None:
                pairs[target.name] = Pair(target.name, [module], target.chain)
            else:
                pairs.setdefault(target.name, Pair(target.name, [], target.chain))
                experts.setdefault(target.name, {})[target.expert] = module
    for name, by_index in experts.items():
        if sorted(by_index) != list(range(hp.eval("experts"))) or len({m.rank for m in by_index.values()}) != 1:
            raise ModelConversionError(f"{name}: a GGUF LoRA on stacked experts needs every expert adapted at one "
                                       f"rank (has experts {sorted(by_index)})", adapter.path)
        pairs[name].modules = [by_index[i] for i in sorted(by_index)]
    out = list(pairs.values())
    for p in out:
        a, b = _pair(p.modules[0], p.chain, hp, adapter, shapes_only=True)
        stack = (len(p.modules),) if len(p.modules) > 1 or experts.get(p.name) else ()
        p.a_shape, p.b_shape = (*stack, *a.shape), (*stack, *b.shape)
    return out


def tensors(p: Pair, hp: HParams, alpha: float, adapter: LoraAdapter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """lora_a and lora_b of `p` as float32 numbers, experts stacked."""
    made = [_pair(m, p.chain, hp, adapter, alpha=alpha) for m in p.modules]
    if len(p.a_shape) == 3:
        return np.stack([a for a, _ in made]), np.stack([b for _, b in made])
    return made[0]


def _pair(module: LoraModule, chain: Chain, hp: HParams, adapter: LoraAdapter | None, shapes_only: bool = False,
          alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One module's pair as llama.cpp wants it: the base tensor's rules applied, the scale llama.cpp will
    use (alpha / rank) corrected to the module's own by a factor on B."""
    if shapes_only:         # zeros of the right shapes (rank rows or columns only: cheap)
        a = np.zeros(module.a.shape, np.float32)
        b = np.zeros(module.b.shape, np.float32)
    else:
        a, b = module.a.load().astype(np.float32), module.b.load().astype(np.float32)
    if module.embedding:
        return np.ascontiguousarray(a.T), b
    if module.fan_in_fan_out:
        a, b = b.T, a.T                 # the pair of W as stored, (b a)^T
    pair = chain.lora(a, b, hp)
    if pair is None:
        where = adapter.path if adapter else None
        raise ModelConversionError(f"{module.target}: llama.cpp's form of this tensor is not a reordering of it "
                                   "(an offset), so a LoRA cannot follow it; merge the adapter instead", where)
    a, b = (np.ascontiguousarray(x) for x in pair)
    if alpha is not None:
        factor = module.scale / (alpha / module.rank)
        if factor != 1.0:
            b = b * np.float32(factor)
    return a, b


def _metadata(writer: gguf.GGUFWriter, adapter: LoraAdapter, alpha: float) -> None:
    """The keys convert_lora_to_gguf.py writes, through gguf-py's own model-card metadata (the adapter
    folder's README.md, named after the base folder when it names nothing)."""
    total, shared, expert, count = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, adapter.path, None, total)
    if meta.name is None:
        meta.name = adapter.base.name if adapter.base else adapter.path.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, count)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    meta.set_gguf_meta_model(writer)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
