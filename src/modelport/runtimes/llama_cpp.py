"""Running a GGUF in llama.cpp (through llama-cpp-python): logits, tokens, greedy tokens, embeddings.

The KV cache is kept in f32 (`type_k=type_v=0`): llama.cpp's default f16 cache alone adds about
1e-3 of logit error, which would hide or fake a conversion fault in f32/f16 files. State-space and
hybrid models keep a recurrent state instead of (or beside) it: `Llama.reset()` clears that memory, so
each `logits` call starts a fresh sequence whatever the model (tests/test_state_space_families.py).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..core.errors import CorruptInputError

F32 = 0
BATCH = 128     # tokens per llama.cpp batch when every position's logits are wanted: its output buffer and
                # its graph's logits are batch x vocab float32 (64 MB at vocab 128256), whatever the context


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs model loading to fd 2 from C; keep the CLI's stderr for modelport's own lines."""
    if os.environ.get("MODELPORT_DEBUG"):
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LlamaCppRuntime:
    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int = 1024, embedding: bool = False, threads: int = 2,
                 pooling: int | None = None, lora: Path | None = None) -> None:
        """`lora`: a GGUF LoRA adapter applied on top (at scale 1), as llama.cpp's --lora does."""
        from llama_cpp import Llama

        # an embedding model sees its whole input in one batch (pooling, non-causal attention)
        batch = n_ctx if embedding else min(n_ctx, BATCH)
        kwargs = dict(model_path=str(path), n_ctx=n_ctx, n_batch=batch, n_ubatch=batch, logits_all=not embedding,
                      embedding=embedding, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0,
                      type_k=F32, type_v=F32)
        if pooling is not None:
            kwargs["pooling_type"] = pooling
        if lora is not None:
            kwargs["lora_path"] = str(lora)
        with _quiet_stderr():
            try:
                self.llm = Llama(**kwargs)
            except ValueError as exc:      # llama-cpp-python's only word for any load failure
                raise CorruptInputError(f"llama.cpp cannot load it ({exc})", path) from exc

    def logits(self, ids: list[int]) -> np.ndarray:
        """[positions, vocab] logits for `ids`, evaluated from an empty cache."""
        self.llm.reset()                     # eval then drops every cached position from 0 on
        with _quiet_stderr():
            self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """The next `n` tokens by argmax of llama.cpp's logits, each step evaluating only the new token."""
        last = self.logits(ids)[-1]
        out: list[int] = []
        for _ in range(n):
            out.append(int(last.argmax()))
            with _quiet_stderr():
                self.llm.eval(out[-1:])
            last = np.asarray(self.llm.scores[self.llm.n_tokens - 1])
        return out

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int] | None:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return int(self.llm.n_vocab())

    @property
    def max_positions(self) -> int | None:
        """The training context the file states ({arch}.context_length), when it states one."""
        value = self.llm.metadata.get(f"{self.llm.metadata.get('general.architecture')}.context_length")
        return int(value) if value else None

    def embed(self, text: str) -> np.ndarray:
        with _quiet_stderr():
            return np.array(self.llm.embed(text), dtype=np.float32)
