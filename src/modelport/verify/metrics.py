"""Per-position comparison of two logit matrices ([positions, vocab]) and its aggregation."""
from __future__ import annotations

import torch


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Per-position logit agreement. A candidate with more vocabulary columns (tokens were added) is
    compared on the source's columns: the old tokens' logits must not change."""
    ref = reference.double()
    cand = candidate.double()[..., :ref.shape[-1]]
    cos = torch.nn.functional.cosine_similarity(ref, cand, dim=-1)
    log_p = torch.log_softmax(ref, dim=-1)
    log_q = torch.log_softmax(cand, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return {
        "positions": int(ref.shape[0]),
        "max_abs_diff": float((ref - cand).abs().max()),
        "max_rel_diff": float((ref - cand).abs().max() / ref.abs().max().clamp_min(1e-12)),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float((ref.argmax(-1) == cand.argmax(-1)).double().mean()),
        "mean_kl": float(kl.clamp_min(0).mean()),
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
