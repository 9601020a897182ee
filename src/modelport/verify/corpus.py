"""A text corpus cut into scoring chunks the way llama-perplexity cuts it.

The corpus is tokenized once, by the source's tokenizer, and both models get those ids. Each chunk is
`ctx` consecutive ids with the first replaced by BOS when the tokenizer adds one; the first half of a
chunk is context, and each position of the second half (but the last) is scored on the id after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..core.errors import UsageError

if TYPE_CHECKING:
    from ..runtimes.base import Runtime

BUILTIN = "builtin"
DEFAULT_CTX = 512
DEFAULT_TOKENS = 32768
MAX_CTX = 16384        # a runtime sizes its cache (and a chunk's logits) by this before the model can say its limit


@dataclass(frozen=True)
class CorpusSettings:
    """`--corpus FILE|builtin --ctx N --tokens N` as given."""

    corpus: str
    ctx: int = DEFAULT_CTX
    tokens: int = DEFAULT_TOKENS

    def __post_init__(self) -> None:
        if not 4 <= self.ctx <= MAX_CTX:
            raise UsageError(f"--ctx {self.ctx}: use 4 (2 tokens of context, 2 scored) to {MAX_CTX}")
        if self.tokens < self.ctx:
            raise UsageError(f"--tokens {self.tokens} is less than one chunk (--ctx {self.ctx})")
        if self.corpus != BUILTIN and not Path(self.corpus).expanduser().is_file():
            raise UsageError("--corpus: no such file (a text file, or 'builtin')", Path(self.corpus).expanduser())

    def text(self) -> str:
        if self.corpus == BUILTIN:
            return resources.files("modelport").joinpath("data", "quality.txt").read_text(encoding="utf-8")
        path = Path(self.corpus).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"--corpus is not UTF-8 text (byte {exc.start})", path) from None


@dataclass(frozen=True)
class Chunk:
    index: int
    ids: list[int]          # what the models are fed
    first: int              # positions [first, len(ids) - 1) are scored

    def next_tokens(self) -> list[int]:
        return self.ids[self.first + 1:]


class Corpus:
    """The corpus as ids and its chunks; `ids_for` is the ids the source runtime gives the text."""

    def __init__(self, settings: CorpusSettings, runtime: "Runtime", max_positions: int | None) -> None:
        if max_positions is not None and settings.ctx > max_positions:
            raise UsageError(f"--ctx {settings.ctx} is more than the model's {max_positions} positions")
        self.settings = settings
        text = settings.text()
        ids = runtime.tokenize(text)
        prefix = runtime.tokenize("") or []
        if ids is None:                   # no tokenizer: the text's bytes, folded into the vocabulary
            ids, prefix = [b % runtime.vocab_size for b in text.encode("utf-8")], []
        self.bos = prefix[0] if len(prefix) == 1 else None
        self.ids = ids
        count = min(len(ids), settings.tokens) // settings.ctx
        if count == 0:
            raise UsageError(f"--corpus {settings.corpus} gives {len(ids)} tokens, less than one chunk of "
                             f"--ctx {settings.ctx}")
        self.count = count

    def chunks(self) -> Iterator[Chunk]:
        ctx = self.settings.ctx
        for i in range(self.count):
            ids = list(self.ids[i * ctx:(i + 1) * ctx])
            if self.bos is not None:
                ids[0] = self.bos
            yield Chunk(i, ids, ctx // 2)

    def describe(self) -> dict:
        return {"corpus": self.settings.corpus, "ctx": self.settings.ctx, "tokens": self.count * self.settings.ctx,
                "corpus_tokens": len(self.ids)}
