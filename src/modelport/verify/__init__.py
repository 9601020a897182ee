"""Proving a conversion: run source and result in their runtimes on the same tokens, compare logits."""
from .check import Reference, check, verify

__all__ = ["Reference", "check", "verify"]
