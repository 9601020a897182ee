"""Per-position comparison of two logit matrices ([positions, vocab]) and its aggregation."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row of two log-softmax arrays (rounding below zero clipped)."""
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(-1), 0.0)


ROWS = 32          # positions per float64 pass: bounds the temporaries at 32 x vocabulary


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Per-position logit agreement, in float64, ROWS positions at a time. A candidate with more vocabulary
    columns (tokens were added) is compared on the source's columns: the old tokens' logits must not change."""
    cos, kl, top, diff, peak = [], [], [], 0.0, 0.0
    for i in range(0, reference.shape[0], ROWS):
        ref = np.asarray(reference[i:i + ROWS], dtype=np.float64)
        cand = np.asarray(candidate[i:i + ROWS], dtype=np.float64)[..., :ref.shape[-1]]
        norms = np.maximum(np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1), 1e-300)
        cos.append((ref * cand).sum(-1) / norms)
        kl.append(kl_rows(log_softmax(ref), log_softmax(cand)))
        top.append(ref.argmax(-1) == cand.argmax(-1))
        diff, peak = max(diff, float(np.abs(ref - cand).max())), max(peak, float(np.abs(ref).max()))
    cos, kl, top = np.concatenate(cos), np.concatenate(kl), np.concatenate(top)
    return {
        "positions": int(reference.shape[0]),
        "max_abs_diff": diff,
        "max_rel_diff": float(diff / max(peak, 1e-12)),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float(top.mean()),
        "mean_kl": float(kl.mean()),
    }


def aggregate(parts: list[dict[str, float]]) -> dict[str, float]:
    total = sum(p["positions"] for p in parts)
    weighted = lambda key: sum(p[key] * p["positions"] for p in parts) / total  # noqa: E731
    return {
        "positions": total,
        "max_abs_diff": max(p["max_abs_diff"] for p in parts),
        "max_rel_diff": max(p["max_rel_diff"] for p in parts),
        "mean_cosine": weighted("mean_cosine"),
        "min_cosine": min(p["min_cosine"] for p in parts),
        "top1_agreement": weighted("top1_agreement"),
        "mean_kl": weighted("mean_kl"),
    }
