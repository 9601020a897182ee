"""`--debug-params`: where every source tensor goes (name, shape, dtype, target type), and what nothing used."""
from __future__ import annotations

from ..core.bundle import ModelBundle
from ..core.dtypes import is_floating, resolve_dtype
from ..formats import Format


def param_table(bundle: ModelBundle, fmt: Format, writer_options) -> list[dict]:
    """One row per written tensor: source name -> target name, shape, source dtype, target type. A format
    that renames or retypes tensors says how (`Format.describe`); the others keep HF names."""
    if fmt.describe is not None:
        return fmt.describe(bundle, writer_options)
    out_dtype = resolve_dtype(getattr(writer_options, "dtype", None), bundle.config, (t.dtype for t in bundle))
    rows = []
    for ref in bundle:
        rows.append({"source": bundle.origins.get(ref.name, ref.name), "hf_name": ref.name, "target": ref.name,
                     "shape": list(ref.shape), "dtype": ref.dtype,
                     "target_type": (f"tied to {ref.alias_of}" if ref.alias_of and fmt.name == "hf"
                                     else out_dtype if is_floating(ref.dtype) else ref.dtype)})
    return rows


def render(rows: list[dict], unused: list[str]) -> str:
    width = max((len(r["source"] or "(computed)") for r in rows), default=10)
    lines = [f"{(r['source'] or '(computed)'):<{width}} -> {r['target']}  {tuple(r['shape'])}  "
             f"{r['dtype']} -> {r['target_type']}" for r in rows]
    lines += [f"{name:<{width}} -> (unused)" for name in unused]
    return "\n".join(lines)
