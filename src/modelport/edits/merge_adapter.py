"""`--merge-adapter DIR`: a PEFT LoRA adapter added into the model as each tensor streams by.

The function is PEFT's `merge_and_unload()`: each adapted W becomes W + scale * (B @ A) (transposed for an
embedding or a fan-in-fan-out Conv1D), the product computed in float32 and cast to the adapter's dtype
before it is added; DoRA then scales each row to its learned magnitude over the row's norm; tensors
the adapter saves whole (`modules_to_save`, trained biases) replace the base's. Nothing is materialized
twice: a merged tensor is a TensorRef whose rows are the base's rows plus the product of the same rows
of B with A, so writers stream it in row blocks like any other.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ..core.adapter import LoraModule
from ..core.bundle import ModelBundle, TensorRef
from ..core.dtypes import numpy_dtype
from ..core.errors import KeyMismatchError, ModelConversionError, UsageError

HALF = ("float16", "bfloat16")          # PEFT computes these adapters' product in float32 on CPU, then casts back


def apply(bundle: ModelBundle, adapter_path: Path) -> ModelBundle:
    from ..formats import sniff
    from ..formats.base import ReadOptions
    from ..formats.peft.reader import check_family, read_adapter
    found = sniff(adapter_path) if adapter_path.exists() else None
    if found is None or not found.adapter:
        raise UsageError("--merge-adapter needs a PEFT adapter folder (adapter_config.json and "
                         "adapter_model.safetensors)", adapter_path)
    adapter, _refs = read_adapter(adapter_path, ReadOptions(), bundle.model_type)
    check_family(adapter, bundle.model_type)
    replaced = {**adapter.copies, **adapter.whole}      # as PeftModel.from_pretrained loads them into the model
    _check(bundle, adapter.modules, replaced, adapter_path)
    for name, ref in replaced.items():
        bundle.tensors[name] = ref.renamed(name)
    for module in adapter.modules:
        bundle.tensors[module.target] = merged(bundle.tensors[module.target], module)
    ranks = sorted({m.rank for m in adapter.modules})
    bundle.notes.append(f"merged the LoRA adapter {adapter_path} into {len(adapter.modules)} tensor(s) (rank "
                        f"{'/'.join(map(str, ranks))}, alpha {adapter.alpha:g}{', rsLoRA' if adapter.rslora else ''}"
                        f"{', DoRA' if adapter.dora else ''}){f'; {len(adapter.whole)} replaced whole' if adapter.whole else ''}")
    return bundle


def _check(bundle: ModelBundle, modules: tuple[LoraModule, ...], whole: dict[str, TensorRef], path: Path) -> None:
    """Every target is a tensor of this model, of the product's shape; a tied copy is refused (it is the
    tensor it is tied to, which the merge would change as well)."""
    missing, wrong = [], []
    for name, shape in [(m.target, m.delta_shape) for m in modules] + [(n, r.shape) for n, r in whole.items()]:
        ref = bundle.tensors.get(name)
        if ref is None:
            missing.append(name)
        elif ref.alias_of is not None:
            raise ModelConversionError(f"adapts {name}, which this model ties to {ref.alias_of}; changing one would "
                                       "change both", path)
        elif ref.shape != tuple(shape):
            wrong.append(f"{name} {tuple(shape)} vs {ref.shape}")
    if missing:
        everything = len(missing) == len(modules) + len(whole)
        raise KeyMismatchError(f"{len(missing)} target(s) not in the {bundle.model_type} model {bundle.source}"
                               f"{' (an adapter for another model?)' if everything else ''}: {', '.join(missing[:5])}", path)
    if wrong:
        raise KeyMismatchError(f"{len(wrong)} target(s) differ in shape from the {bundle.model_type} model "
                               f"(adapter, model): {'; '.join(wrong[:3])}", path)
    for m in modules:
        if m.magnitude is not None and m.transposed:
            raise ModelConversionError(f"{m.target}: DoRA on an embedding or a Conv1D is not merged here", path)


def merged(base: TensorRef, module: LoraModule) -> TensorRef:
    """`base` with the module's change added (no raw byte range: the bytes are new), by row blocks when the
    base reads rows alone (else whole, once: a block at a time would read it once per block)."""
    rows = partial(merged_rows, base, module) if base.rows is not None else None
    return replace(base, loader=partial(merged_rows, base, module, 0, base.shape[0], whole=True), raw=None,
                   rows=rows, source=f"{base.source} + {module.a.source}")


def merged_rows(base: TensorRef, module: LoraModule, start: int, stop: int, whole: bool = False) -> np.ndarray:
    """Rows [start, stop) of W + delta, as PEFT's LoraLayer.merge computes them, in W's dtype."""
    w = base.load() if whole else base.load_rows(start, stop)
    delta = delta_rows(module, start, stop)
    out = np.add(w, delta, dtype=np.float32)
    if module.magnitude is not None:
        rows = out.astype(w.dtype).astype(np.float32, copy=False)
        norm = np.linalg.norm(rows, axis=1).astype(w.dtype).astype(np.float32, copy=False)
        magnitude = module.magnitude.load().astype(np.float32, copy=False)[start:stop]
        out = (magnitude / norm)[:, None] * out
    return out.astype(w.dtype, copy=False)


def delta_rows(module: LoraModule, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of scale * (B @ A) (or its transpose), in the adapter's dtype: float32 products,
    cast back for a half-precision adapter, as PEFT's get_delta_weight does on CPU."""
    dtype = module.b.dtype
    if module.transposed:          # W's rows are the product's columns: A's columns
        a = module.a.load()[:, start:stop].astype(np.float32, copy=False)
        product = (module.b.load().astype(np.float32, copy=False) @ a).T
    else:
        product = (module.b.load_rows(start, stop).astype(np.float32, copy=False)
                   @ module.a.load().astype(np.float32, copy=False))
    product *= np.float32(module.scale)
    return product.astype(numpy_dtype(dtype), copy=False) if dtype in HALF else product
