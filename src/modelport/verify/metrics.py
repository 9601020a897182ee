"""Per-position comparison of two logit matrices ([positions, vocab]) and its aggregation.

The verdict is taken on statistics of the pooled positions (mean KL divergence, a high percentile of
it, same top-1), each with llama.cpp's standard error where it has one, never on the single worst
position: one unlucky position of a correct quantized model can be far off (docs/verify.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row of two log-softmax arrays (rounding below zero clipped)."""
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(-1), 0.0)


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """Mean, and its standard error (0 for fewer than 11 values, as llama.cpp has it)."""
    n = len(values)
    mean = float(values.mean())
    variance = float((values ** 2).mean() - mean ** 2)
    return mean, (math.sqrt(variance / (n - 1)) if variance > 0 and n > 10 else 0.0)


def fraction_error(fraction: float, n: int) -> float:
    """Standard error of a fraction of n positions (llama.cpp's same-top-1 uncertainty)."""
    return math.sqrt(fraction * (1 - fraction) / (n - 1)) if n > 1 else 0.0


def percentile(values: np.ndarray, fraction: float) -> float:
    """llama.cpp's linear interpolation between order statistics (numpy's default 'linear' method)."""
    return float(np.percentile(values, 100 * fraction))


@dataclass(frozen=True)
class Comparison:
    """One prompt's figures, and the per-position values the pooled statistics are taken from."""

    figures: dict[str, float]
    kl: np.ndarray
    same_top1: np.ndarray
    cosine: np.ndarray


BLOCK = 1 << 20    # float64 elements per temporary of a comparison pass (8 MB)


def block_rows(vocab: int) -> int:
    """Positions per float64 pass: 32, fewer at large vocabularies (8 at 128256), so each of a pass's
    half-dozen temporaries stays near BLOCK elements whatever the model."""
    return max(1, min(32, BLOCK // max(vocab, 1)))


def compare(reference: np.ndarray, candidate: np.ndarray) -> Comparison:
    """Per-position logit agreement, in float64, `block_rows` positions at a time. A candidate with more vocabulary
    columns (tokens were added) is compared on the source's columns: the old tokens' logits must not change."""
    cos, kl, top, diff, peak = [], [], [], 0.0, 0.0
    rows = block_rows(reference.shape[-1])
    for i in range(0, reference.shape[0], rows):
        ref = np.asarray(reference[i:i + rows], dtype=np.float64)
        cand = np.asarray(candidate[i:i + rows], dtype=np.float64)[..., :ref.shape[-1]]
        norms = np.maximum(np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1), 1e-300)
        cos.append((ref * cand).sum(-1) / norms)
        kl.append(kl_rows(log_softmax(ref), log_softmax(cand)))
        top.append(ref.argmax(-1) == cand.argmax(-1))
        diff, peak = max(diff, float(np.abs(ref - cand).max())), max(peak, float(np.abs(ref).max()))
    cos, kl, same = np.concatenate(cos), np.concatenate(kl), np.concatenate(top)
    figures = {
        "positions": int(reference.shape[0]),
        "max_abs_diff": diff,
        "max_rel_diff": float(diff / max(peak, 1e-12)),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float(same.mean()),
        "mean_kl": float(kl.mean()),
    }
    return Comparison(figures, kl, same, cos)


def aggregate(parts: list[Comparison]) -> dict[str, float]:
    """The verdict's statistics over every position of every prompt."""
    kl = np.concatenate([p.kl for p in parts])
    same = np.concatenate([p.same_top1 for p in parts]).astype(np.float64)
    cos = np.concatenate([p.cosine for p in parts])
    mean_kl, mean_kl_error = mean_and_error(kl)
    top1 = float(same.mean())
    return {
        "positions": len(kl),
        "max_abs_diff": max(p.figures["max_abs_diff"] for p in parts),
        "max_rel_diff": max(p.figures["max_rel_diff"] for p in parts),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": top1,
        "top1_agreement_error": fraction_error(top1, len(same)),
        "mean_kl": mean_kl,
        "mean_kl_error": mean_kl_error,
        "kl_p95": percentile(kl, 0.95),
        "kl_max": float(kl.max()),
    }
