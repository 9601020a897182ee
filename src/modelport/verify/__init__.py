"""Proving a conversion: run source and result in their runtimes on the same tokens, compare logits.

The names below load `check` (and with it the runtimes, torch among them) on first use, so commands
that only need `verify.corpus` or `verify.thresholds` (argument checking) stay torch-free.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .check import Reference, check, verify

__all__ = ["Reference", "check", "verify"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.check")
    names = {"Reference": module.Reference, "check": module.check, "verify": module.verify}
    globals().update(names)           # importing the submodule bound `check` to it: bind the function
    return names[name]
