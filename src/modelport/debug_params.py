"""`--debug-params`: where every source tensor goes (name, shape, dtype, target type), and what nothing used."""
from __future__ import annotations

from . import detect as fmt
from .bundle import ModelBundle
from .dtypes import dtype_name


def param_table(bundle: ModelBundle, target: str, out_dtype, quant: str | None) -> list[dict]:
    """One row per written tensor: source name -> target name, shape, source dtype, target type."""
    if target == fmt.GGUF:
        from .formats.gguf.hparams import hparams
        from .formats.gguf.writer import mapping_for, plan
        planned = plan(bundle, mapping_for(bundle), hparams(bundle.config), quant)
        return [{"source": bundle.origins.get(p.ref.name, p.ref.name) if p.ref else None,
                 "hf_name": p.ref.name if p.ref else None, "target": p.gguf_name, "shape": list(p.shape),
                 "dtype": dtype_name(p.ref.dtype) if p.ref else "float32", "target_type": p.qtype.name}
                for p in planned]
    rows = []
    for ref in bundle:
        floating = ref.dtype.is_floating_point
        rows.append({"source": bundle.origins.get(ref.name, ref.name), "hf_name": ref.name, "target": ref.name,
                     "shape": list(ref.shape), "dtype": dtype_name(ref.dtype),
                     "target_type": (f"tied to {ref.alias_of}" if ref.alias_of and target == fmt.HF
                                     else dtype_name(out_dtype) if floating else dtype_name(ref.dtype))})
    return rows


def render(rows: list[dict], unused: list[str]) -> str:
    width = max((len(r["source"] or "(computed)") for r in rows), default=10)
    lines = [f"{(r['source'] or '(computed)'):<{width}} -> {r['target']}  {tuple(r['shape'])}  "
             f"{r['dtype']} -> {r['target_type']}" for r in rows]
    lines += [f"{name:<{width}} -> (unused)" for name in unused]
    return "\n".join(lines)
