"""Pass/fail bounds per converted type, and `--threshold` overrides.

Each class bounds: the smallest per-position cosine of the logits, the mean KL divergence
(source ‖ converted), the largest logit difference relative to the largest logit (catches a
localized fault a cosine averages away), and tokenization agreement (the converted runtime must turn
the built-in prompts into the same ids). The values are documented, with the measurements behind
them, in the README.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.errors import UsageError

# From `bench/measure_thresholds.py` on a tiny Llama trained 300 steps (worst type of each class):
#   f32 KL 1.8e-10 rel 4.6e-5 | f16 KL 5.6e-7 rel 1.6e-3 | bf16 KL 7.1e-5 rel 1.3e-2 min cos 0.9998
#   q8_0 KL 5.6e-4 min cos 0.997 | 4-6 bit (q4_0) KL 5.2e-2 min cos 0.89 | 2-3 bit (q2_k) KL 0.30 min cos 0.55
# Bounds leave about 3x on KL and the relative difference, and a cosine floor below the worst seen.
THRESHOLDS: dict[str, dict[str, float]] = {
    "float32": {"min_cosine": 0.99999, "mean_kl": 1e-6, "max_rel_diff": 1e-3, "tokenization_agreement": 1.0},
    "float16": {"min_cosine": 0.9999, "mean_kl": 1e-5, "max_rel_diff": 1e-2, "tokenization_agreement": 1.0},
    "bfloat16": {"min_cosine": 0.999, "mean_kl": 5e-4, "max_rel_diff": 5e-2, "tokenization_agreement": 1.0},
    "q8_0": {"min_cosine": 0.99, "mean_kl": 3e-3, "max_rel_diff": 0.1, "tokenization_agreement": 1.0},
    "4-6 bit": {"min_cosine": 0.8, "mean_kl": 0.15, "tokenization_agreement": 1.0},
    "2-3 bit": {"min_cosine": 0.4, "mean_kl": 0.6, "tokenization_agreement": 1.0},
    "int8": {"min_cosine": 0.95, "tokenization_agreement": 1.0},   # onnxruntime dynamic int8 (see README)
}
# measured over a --corpus (verify/quality.py); no class bounds them unless asked
QUALITY = ("kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_p99_9", "kld_max", "same_top1", "ppl_ratio",
           "ln_ppl_ratio", "dp_rms")
LOWER_IS_BETTER = {"mean_kl", "max_rel_diff", "max_abs_diff", "ppl_ratio", "ln_ppl_ratio", "dp_rms",
                   *(key for key in QUALITY if key.startswith("kld_"))}
GGUF_CLASSES = {"ALL_F32": "float32", "MOSTLY_F16": "float16", "MOSTLY_BF16": "bfloat16", "MOSTLY_Q8_0": "q8_0",
                "MOSTLY_Q2_K": "2-3 bit", "MOSTLY_Q3_K_S": "2-3 bit", "MOSTLY_Q3_K_M": "2-3 bit",
                "MOSTLY_Q3_K_L": "2-3 bit",
                # the importance-matrix types under 4 bits (docs/quantization.md), held to q2_k's bounds
                **{f"MOSTLY_{t}": "2-3 bit" for t in ("Q2_K_S", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
                                                      "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "TQ1_0", "TQ2_0")}}
KNOWN = ("min_cosine", "mean_cosine", "mean_kl", "max_rel_diff", "max_abs_diff", "top1_agreement",
         "tokenization_agreement", *QUALITY)


def gguf_class(path: Path) -> str:
    from gguf import LlamaFileType

    from ..formats.gguf.header import read_header

    code = read_header(path).get("general.file_type", int(LlamaFileType.ALL_F32))
    try:
        name = LlamaFileType(code).name
    except ValueError:
        name = "unknown"
    return GGUF_CLASSES.get(name, "4-6 bit")


def onnx_class(path: Path) -> str:
    """The class of an exported file, from its weights' element types."""
    import onnx
    types = {init.data_type for init in onnx.load(str(path), load_external_data=False).graph.initializer}
    if onnx.TensorProto.INT8 in types or onnx.TensorProto.UINT8 in types:
        return "int8"
    return "float16" if onnx.TensorProto.FLOAT16 in types else "float32"


# formats whose file type says the class; any other result is classed by its bundle's dtype
FILE_CLASSES: dict[str, Callable[[Path], str]] = {"gguf": gguf_class, "onnx": onnx_class}


def threshold_class(fmt: str, path: Path, bundle_dtype: Callable[[], str]) -> str:
    """Which row of THRESHOLDS a converted file is held to."""
    return FILE_CLASSES[fmt](path) if fmt in FILE_CLASSES else bundle_dtype()


def parse_overrides(items: list[str], corpus: bool = False) -> dict[str, float]:
    """`--threshold KEY=VALUE` (repeatable) -> {KEY: VALUE}; the corpus statistics need `--corpus`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in KNOWN:
            raise UsageError(f"--threshold {item!r}: use KEY=VALUE with KEY one of {', '.join(KNOWN)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"--threshold {item!r}: {value!r} is not a number") from None
        if key in QUALITY and not corpus:
            raise UsageError(f"--threshold {key} is measured over a corpus: give --corpus FILE|builtin")
    return out


def failures(measured: dict[str, float | None], limits: dict[str, float]) -> list[str]:
    """Every bound a measurement breaks; a figure that was not measured (None) breaks none."""
    out = []
    for key, bound in limits.items():
        value = measured.get(key)
        if value is None:
            continue
        if key in LOWER_IS_BETTER and value > bound:
            out.append(f"{key} {value:.6g} > {bound:g}")
        elif key not in LOWER_IS_BETTER and value < bound:
            out.append(f"{key} {value:.6g} < {bound:g}")
    return out
