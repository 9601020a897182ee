"""Quality statistics over a scored corpus, as llama.cpp's `llama-perplexity --kl-divergence` defines them.

Each chunk's logits are folded in as they are produced and then dropped: what is kept is a handful of
float64 per scored position (KL divergence, the change in the probability of the actual next token),
never a vocabulary-sized row. Per position i of a chunk's scored half, with p the source's and q the
converted model's next-token distribution and t the token that follows:

    NLL        -log p(t), -log q(t)                     perplexity = exp(mean NLL)
    KLD        sum_v p(v) (log p(v) - log q(v))
    same top   argmax p == argmax q
    delta p    q(t) - p(t)

Uncertainties are llama.cpp's: the standard error of a mean, and for ln(PPL(Q)/PPL(base)) the two
errors combined with their covariance, so the figures are comparable with what model cards quote.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import block_rows, fraction_error, kl_rows, log_softmax, mean_and_error, percentile


def _positions(source: np.ndarray, converted: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, ...]:
    """(NLL source, NLL converted, KLD, same top, delta p) of each row."""
    log_p = log_softmax(np.asarray(source, dtype=np.float64))
    # a converted model with added tokens is compared on the source's vocabulary
    log_q = log_softmax(np.asarray(converted, dtype=np.float64)[:, :log_p.shape[1]])
    rows = np.arange(len(tokens))
    nll_p, nll_q = -log_p[rows, tokens], -log_q[rows, tokens]
    kld = kl_rows(log_p, log_q)
    return nll_p, nll_q, kld, log_p.argmax(-1) == log_q.argmax(-1), np.exp(-nll_q) - np.exp(-nll_p)


@dataclass
class ChunkFigures:
    """What one chunk contributed, for per-chunk tables and plots."""

    chunk: int
    positions: int
    ppl_source: float
    ppl_converted: float
    kld_mean: float
    same_top1: float
    dp_rms: float


@dataclass
class QualityStats:
    """Running statistics of a converted model against its source over a corpus."""

    nll_source: list[np.ndarray] = field(default_factory=list)
    nll_converted: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    p_diff: list[np.ndarray] = field(default_factory=list)
    chunks: list[ChunkFigures] = field(default_factory=list)

    def add(self, source_logits: np.ndarray, converted_logits: np.ndarray, next_tokens: np.ndarray) -> ChunkFigures:
        """Fold in one chunk's scored positions: row i of both logit arrays predicts next_tokens[i]."""
        rows = block_rows(source_logits.shape[-1])
        parts = [_positions(source_logits[i:i + rows], converted_logits[i:i + rows], next_tokens[i:i + rows])
                 for i in range(0, len(next_tokens), rows)]
        nll_p, nll_q, kld, same, p_diff = (np.concatenate(column) for column in zip(*parts))
        for store, values in ((self.nll_source, nll_p), (self.nll_converted, nll_q), (self.kld, kld),
                              (self.same_top, same), (self.p_diff, p_diff)):
            store.append(values)
        figures = ChunkFigures(len(self.chunks), len(nll_p), math.exp(nll_p.mean()), math.exp(nll_q.mean()),
                               float(kld.mean()), float(same.mean()), float(np.sqrt((p_diff ** 2).mean())))
        self.chunks.append(figures)
        return figures

    def kld_values(self) -> np.ndarray:
        """Every scored position's KL divergence, in corpus order (for plots)."""
        return np.concatenate(self.kld) if self.kld else np.zeros(0)

    def profile(self, bins: int = 40, windows: int = 200) -> dict[str, dict[str, list[float]]]:
        """What the report plots, bounded whatever the corpus: a log-spaced KLD histogram, and the mean
        KLD over at most `windows` consecutive runs of scored positions."""
        kld = self.kld_values()
        floor = max(float(kld[kld > 0].min()) if (kld > 0).any() else 1e-12, 1e-12)
        edges = np.geomspace(floor, max(float(kld.max()), floor * 10), bins + 1)
        counts, _ = np.histogram(np.clip(kld, floor, None), bins=edges)
        starts = np.linspace(0, len(kld), min(windows, len(kld)) + 1).astype(int)
        return {"kld_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
                "kld_along": {"position": starts[:-1].tolist(),
                              "kld_mean": [float(kld[a:b].mean()) for a, b in zip(starts[:-1], starts[1:])]}}

    def summary(self) -> dict[str, float | int]:
        """The figures under their stable `--json` keys (README: "Quality statistics")."""
        nll_p, nll_q = np.concatenate(self.nll_source), np.concatenate(self.nll_converted)
        kld, p_diff = np.sort(self.kld_values()), np.sort(np.concatenate(self.p_diff))
        same = np.concatenate(self.same_top).astype(np.float64)
        n = len(kld)
        log_ppl_p, err_p = mean_and_error(nll_p)
        log_ppl_q, err_q = mean_and_error(nll_q)
        covariance = float((nll_q * nll_p).mean() - log_ppl_q * log_ppl_p) / (n - 1) if n >= 10 else 0.0
        ratio_error = math.sqrt(max(err_q ** 2 + err_p ** 2 - 2 * covariance, 0.0))
        kld_mean, kld_error = mean_and_error(kld)
        mse, mse_error = mean_and_error(p_diff ** 2)
        dp_mean, dp_mean_error = mean_and_error(p_diff)
        rms = math.sqrt(mse)
        top = float(same.mean())
        return {
            "positions": n,
            "chunks": len(self.chunks),
            "ppl_source": math.exp(log_ppl_p),
            "ppl_source_error": math.exp(log_ppl_p) * err_p,
            "ppl_converted": math.exp(log_ppl_q),
            "ppl_converted_error": math.exp(log_ppl_q) * err_q,
            "ln_ppl_ratio": log_ppl_q - log_ppl_p,
            "ln_ppl_ratio_error": ratio_error,
            "ppl_ratio": math.exp(log_ppl_q - log_ppl_p),
            "ppl_ratio_error": math.exp(log_ppl_q - log_ppl_p) * ratio_error,
            "kld_mean": kld_mean,
            "kld_mean_error": kld_error,
            "kld_median": float(np.median(kld)),
            "kld_p90": percentile(kld, 0.90),
            "kld_p99": percentile(kld, 0.99),
            "kld_p99_9": percentile(kld, 0.999),
            "kld_max": float(kld[-1]),
            "same_top1": top,
            "same_top1_error": fraction_error(top, n),
            "dp_mean": dp_mean,
            "dp_mean_error": dp_mean_error,
            "dp_rms": rms,
            "dp_rms_error": 0.5 / rms * mse_error if rms > 0 else 0.0,
            "dp_p1": percentile(p_diff, 0.01),
            "dp_p99": percentile(p_diff, 0.99),
        }
