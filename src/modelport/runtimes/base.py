"""The one small interface every runtime offers: what verify, ONNX validation and quality statistics ask."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Runtime(Protocol):
    """A model running in some engine, fed token ids, answering per position."""

    name: str       # "transformers", "llama.cpp", "onnxruntime": what reports call it
    vocab_size: int     # ids it takes: [0, vocab_size)
    max_positions: int | None   # the longest sequence the model was made for, when it says

    def logits(self, ids: list[int]) -> "np.ndarray":
        """[positions, vocab] float32 logits (hidden states, for encoders without a head)."""

    def tokenize(self, text: str) -> list[int] | None:
        """The runtime's own ids for `text`, or None when it carries no tokenizer (then nothing is compared)."""

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """The next `n` tokens by argmax, each step conditioned on the ones before."""

    def decode(self, ids: list[int]) -> str:
        """The text of `ids` (for reports)."""
