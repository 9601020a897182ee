"""Running an exported ONNX graph in onnxruntime for `verify`: logits (or hidden states) per position.

The graph is fed what a text model's main graph takes (input_ids, attention_mask); its first output
is compared, as the other runtimes' logits are. An ONNX file carries no tokenizer, so the ids
are the source tokenizer's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def session(path: Path):
    """An onnxruntime session on the CPU, the provider every machine has."""
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class OnnxRuntime:
    name = "onnxruntime"
    max_positions = None      # an exported graph takes any length; its source's config says the limit

    def __init__(self, path: Path) -> None:
        self.session = session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def logits(self, ids: list[int]) -> np.ndarray:
        feeds = {"input_ids": np.array([ids], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, len(ids)), dtype=np.int64)
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros((1, len(ids)), dtype=np.int64)
        return self.session.run([self.output], feeds)[0][0].astype(np.float32)

    @property
    def vocab_size(self) -> int:
        shape = self.session.get_outputs()[0].shape
        return int(shape[-1]) if isinstance(shape[-1], int) else 0

    def decode(self, ids: list[int]) -> str:
        return str(ids)

    def tokenize(self, text: str) -> None:
        """An ONNX file carries no tokenizer: the source's ids are used, and agreement is not compared."""
        return None

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """Greedy tokens by re-running the whole sequence (the main graph has no cache input)."""
        out = list(ids)
        for _ in range(n):
            out.append(int(np.argmax(self.logits(out)[-1])))
        return out[len(ids):]
