"""Running a GGUF in llama.cpp (through llama-cpp-python): logits, tokens, greedy tokens, embeddings.

The KV cache is kept in f32 (`type_k=type_v=0`): llama.cpp's default f16 cache alone adds about
1e-3 of logit error, which would hide or fake a conversion fault in f32/f16 files. State-space and
hybrid models keep a recurrent state instead of (or beside) it: every sequence starts from cleared
memory (`llama_memory_clear`), whatever the model (tests/test_state_space_families.py).

Logits are taken from llama.cpp's own output buffer, a batch at a time (`_blocks`), not through
llama-cpp-python's `scores`, which keeps every evaluated position's row (250 MB for a 500-position
prompt at vocab 128256): verify walks them in blocks (rows.LogitRows) and holds one batch's worth.
The file's pages that llama.cpp faulted in when it mapped it (MAP_POPULATE) are given back after
loading (`_give_back`); the graph faults back what it touches, so an embedding table's unused rows
are never counted in this process's memory.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.errors import CorruptInputError
from .rows import LogitRows

F32 = 0
BATCH = 128     # tokens per llama.cpp batch when every position's logits are wanted: its output buffer and
                # its graph's logits are batch x vocab float32 (64 MB at vocab 128256), whatever the context
MADV_DONTNEED = 4


def _give_back(path: Path) -> None:
    """Drop this process's pages of its read-only shared mappings of `path` (llama.cpp's, populated whole
    when it loaded). The data stays in the page cache and in the file; a later touch maps it again. Only
    shared read-only mappings are touched: nothing can be lost from them."""
    if not sys.platform.startswith("linux"):
        return
    real = os.path.realpath(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == real and fields[1][1] == "-" and fields[1][3] == "s":
                low, high = (int(x, 16) for x in fields[0].split("-"))
                libc.madvise(low, high - low, MADV_DONTNEED)


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
        kwargs = dict(model_path=str(path), n_ctx=n_ctx, n_batch=batch, n_ubatch=batch, logits_all=False,
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
        _give_back(path)

    @contextlib.contextmanager
    def _batch(self) -> Iterator:
        """A llama_batch with room for one of this context's batches, freed after use."""
        import llama_cpp

        batch = llama_cpp.llama_batch_init(self.llm.n_batch, 0, 1)
        try:
            yield batch
        finally:
            llama_cpp.llama_batch_free(batch)

    def _decode(self, batch, ids: list[int], start: int, wanted: range) -> np.ndarray | None:
        """Feed `ids` at positions start.. (the cache holding those before), asking logits for the
        positions in `wanted` only (llama.cpp skips the output head for the others); those logits, copied
        out of llama.cpp's output buffer, or None when none were asked."""
        import llama_cpp

        asked = 0
        for i, token in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = start + i in wanted
            asked += start + i in wanted
        batch.n_tokens = len(ids)
        with _quiet_stderr():
            status = llama_cpp.llama_decode(self.llm.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        if not asked:
            return None
        out = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.llm.ctx), shape=(asked * self.vocab_size,))
        return out.reshape(asked, self.vocab_size).copy()

    def _blocks(self, ids: list[int], wanted: range) -> Iterator[np.ndarray]:
        """The logits of the positions in `wanted` of `ids`, fed from cleared memory a batch at a time:
        one [positions, vocab] float32 block per batch that has any (nothing is fed past them)."""
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        step = self.llm.n_batch
        with self._batch() as batch:
            for start in range(0, wanted.stop, step):
                block = self._decode(batch, ids[start:min(start + step, wanted.stop)], start, wanted)
                if block is not None:
                    yield block

    def logits(self, ids: list[int]) -> np.ndarray:
        """[positions, vocab] logits for `ids`, evaluated from cleared memory."""
        return np.concatenate(list(self._blocks(ids, range(len(ids)))))

    def logit_rows(self, ids: list[int], first: int = 0, stop: int | None = None) -> LogitRows:
        """The logits of positions [first, stop) of `ids`, made a batch at a time as a reader reaches them."""
        wanted = range(first, len(ids) if stop is None else stop)
        return LogitRows(lambda: self._blocks(ids, wanted), len(wanted), self.vocab_size)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """The next `n` tokens by argmax of llama.cpp's logits, each step feeding only the new token."""
        *_, last = self._blocks(ids, range(len(ids) - 1, len(ids)))
        out: list[int] = []
        with self._batch() as batch:
            for _ in range(n):
                out.append(int(last[-1].argmax()))
                if len(out) < n:
                    position = len(ids) + len(out) - 1
                    last = self._decode(batch, out[-1:], position, range(position, position + 1))
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
