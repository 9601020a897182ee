"""The default verdict, and `--threshold` overrides.

A wrong conversion (a skipped Q/K permutation, a dropped bias, a wrong norm or rope setting, swapped
experts, a misread scale) moves logits by nats and collapses top-1 agreement; quantization noise grows
as the weights' own error grows. So the defaults bound statistics of every position pooled (mean KL
divergence, its 95th percentile, top-1 agreement), never the single worst position, and scale each
bound with the noise the result's weights are expected to carry: the relative RMS error of its tensor
types (TYPE_ERROR), combined over its tensors by size. docs/verify.md gives the rule, the reason for
each constant and the calibration behind it (bench/measure_thresholds.py on real trained models).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..core.errors import UsageError

# Relative RMS error ||dequant(quant(W)) - W|| / ||W|| of each GGML type: the larger of what it is on
# the 2-D weights of all-MiniLM-L6-v2 and SmolLM2-135M (bench/measure_thresholds.py: llama.cpp's C
# quantizer, gguf-py's dequantizer). Real weights have outliers, so these are about twice a Gaussian's.
TYPE_ERROR: dict[str, float] = {
    "F32": 0.0, "F16": 2.1e-4, "BF16": 1.7e-3, "Q8_0": 6.2e-3, "Q6_K": 1.9e-2, "Q5_K": 3.8e-2, "Q5_1": 4.6e-2,
    "Q5_0": 4.7e-2, "Q4_K": 7.6e-2, "Q4_1": 8.3e-2, "Q4_0": 9.5e-2, "Q3_K": 0.16, "Q2_K": 0.31,
}
UNKNOWN_TYPE_ERROR = TYPE_ERROR["Q2_K"]     # a type not listed (IQ*, TQ*) is held to the loosest bounds
CLASS_ERROR = {"float32": 0.0, "float16": TYPE_ERROR["F16"], "bfloat16": TYPE_ERROR["BF16"]}

# The bounds, as functions of the expected relative weight error e (docs/verify.md, "The verdict"):
#   mean KL <= KL_FLOOR + KL_SCALE * e^2      (KL grows with the square of a small logit perturbation)
#   KL p95  <= P95_FLOOR + P95_SCALE * e^2
#   top-1   >= 1 - min(TOP1_FLOOR + TOP1_SCALE * e, TOP1_CAP)   (flips grow with the perturbation itself)
KL_FLOOR, KL_SCALE, KL_CAP = 1e-6, 600.0, 1.5
P95_FLOOR, P95_SCALE, P95_CAP = 1e-5, 3000.0, 5.0
TOP1_FLOOR, TOP1_SCALE, TOP1_CAP = 0.05, 10.0, 0.6
# with no quantization noise (f32), the worst position is bounded too: any runtime difference is rounding
EXACT = {"max_rel_diff": 1e-3}
CLASSES = {"int8": {"min_cosine": 0.95, "tokenization_agreement": 1.0}}  # onnxruntime dynamic int8 (README)

# measured over a --corpus (verify/quality.py); no default bounds them
QUALITY = ("kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_p99_9", "kld_max", "same_top1", "ppl_ratio",
           "ln_ppl_ratio", "dp_rms")
LOWER_IS_BETTER = {"mean_kl", "kl_p95", "kl_max", "max_rel_diff", "max_abs_diff", "ppl_ratio", "ln_ppl_ratio",
                   "dp_rms", *(key for key in QUALITY if key.startswith("kld_"))}
GGUF_CLASSES = {"ALL_F32": "float32", "MOSTLY_F16": "float16", "MOSTLY_BF16": "bfloat16", "MOSTLY_Q8_0": "q8_0",
                "MOSTLY_Q2_K": "2-3 bit", "MOSTLY_Q3_K_S": "2-3 bit", "MOSTLY_Q3_K_M": "2-3 bit",
                "MOSTLY_Q3_K_L": "2-3 bit",
                # the importance-matrix types under 4 bits (docs/quantization.md), held to q2_k's bounds
                **{f"MOSTLY_{t}": "2-3 bit" for t in ("Q2_K_S", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
                                                      "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "TQ1_0", "TQ2_0")}}
KNOWN = ("mean_kl", "kl_p95", "kl_max", "top1_agreement", "min_cosine", "mean_cosine", "max_rel_diff",
         "max_abs_diff", "tokenization_agreement", *QUALITY)


def gguf_class(path: Path) -> str:
    """The file type's class, a name for people (the bounds come from the tensor types)."""
    from gguf import LlamaFileType

    from ..formats.gguf.header import read_header

    code = read_header(path).get("general.file_type", int(LlamaFileType.ALL_F32))
    try:
        name = LlamaFileType(code).name
    except ValueError:
        name = "unknown"
    return GGUF_CLASSES.get(name, "4-6 bit")


def gguf_error(path: Path) -> float:
    """The relative RMS error a GGUF's weights are expected to carry: each matrix's type error, combined
    by size (root of the size-weighted mean square). Vectors (norms, biases) are never quantized."""
    from ..formats.gguf.header import read_header

    total = square = 0.0
    for info in read_header(path).tensors:
        if len(info.shape) < 2:
            continue
        n = math.prod(info.shape)
        total += n
        square += n * TYPE_ERROR.get(info.qtype.name, UNKNOWN_TYPE_ERROR) ** 2
    return math.sqrt(square / total) if total else 0.0


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
    """The result's class: its GGUF file type, ONNX element types, or dtype."""
    return FILE_CLASSES[fmt](path) if fmt in FILE_CLASSES else bundle_dtype()


def expected_error(fmt: str, path: Path, klass: str) -> float:
    """The relative weight error the result's types predict: a GGUF's from its tensor types, any other
    result's from its dtype (an unknown dtype is held to bf16's)."""
    if fmt == "gguf":
        return gguf_error(path)
    return CLASS_ERROR.get(klass, CLASS_ERROR["bfloat16"])


def default_limits(klass: str, error: float) -> dict[str, float]:
    """The bounds a result of this class, expected to carry this relative weight error, is held to."""
    if klass in CLASSES:
        return dict(CLASSES[klass])
    e2 = error * error
    limits = {"mean_kl": min(KL_FLOOR + KL_SCALE * e2, KL_CAP), "kl_p95": min(P95_FLOOR + P95_SCALE * e2, P95_CAP),
              "top1_agreement": 1.0 - min(TOP1_FLOOR + TOP1_SCALE * error, TOP1_CAP), "tokenization_agreement": 1.0}
    return {**limits, **EXACT} if error == 0.0 else limits


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
