"""Deployment profiles: a named set of GGUF types for a kind of target, so users need not know them.

- cpu:  q4_k_m (the usual size/quality balance for llama.cpp on x86) and q8_0 (near-lossless)
- gpu:  f16 (full quality when memory allows) and q8_0
- arm:  q4_0 (llama.cpp repacks it at load time for ARM's dot-product kernels) and q4_k_m
- edge: q3_k_m and q4_k_s (the smallest files that stay usable on phones and boards)
"""
from __future__ import annotations

from ...core.errors import UsageError

PROFILES: dict[str, tuple[str, ...]] = {
    "cpu": ("q4_k_m", "q8_0"),
    "gpu": ("f16", "q8_0"),
    "arm": ("q4_0", "q4_k_m"),
    "edge": ("q3_k_m", "q4_k_s"),
}


def quants_for(profile: str) -> tuple[str, ...]:
    try:
        return PROFILES[profile.lower()]
    except KeyError:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}") from None


def file_name(quant: str) -> str:
    return f"model-{quant}.gguf"
