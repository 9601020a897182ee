"""What every format declares, and the settings readers and writers are given.

A format is a record (`Format`): how to recognise a path cheaply (`sniff`: suffixes, magic bytes,
folder layout, never a heavy import), how to read it into a ModelBundle, how to write a bundle, which
of the user's write settings it takes and how it turns them into its own typed options, how its
output is published (a folder, or files beside the destination) and which runtime runs it. The API
dispatches through the table of these records (formats/__init__.py), so a new format is one package.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from ..core.bundle import ModelBundle

# the command-line flag behind each write setting, for messages about a flag a format does not take
FLAGS = {"dtype": "--dtype", "quant": "--quant", "max_shard_size": "--max-shard-size",
         "split_max_size": "--split-max-size", "pre_tokenizer": "--pre-tokenizer", "with_past": "--with-past",
         "opset": "--opset", "threads": "--threads", "imatrix": "--imatrix", "imatrix_corpus": "--imatrix-corpus",
         "imatrix_ctx": "--imatrix-ctx", "imatrix_tokens": "--imatrix-tokens", "save_imatrix": "--save-imatrix"}


@dataclass(frozen=True)
class ReadOptions:
    base_model: Path | None = None          # config and tokenizer for a bare checkpoint
    trust_remote_code: bool = False         # allow pickles that run code
    pre_tokenizer: str | None = None        # a GGUF source's split rules, when its tokenizer.ggml.pre is unknown
    # False (inspect): a tokenizer the source's metadata cannot rebuild is left out with a note, not refused
    tokenizer_required: bool = True


@dataclass(frozen=True)
class WriteSettings:
    """What the user asked of the writer, parsed (sizes in bytes, dtype names canonical) but not yet
    checked against a format: each format takes the fields it names in `Format.takes`."""

    dtype: str | None = None                # None: from the config or the source tensors
    quant: str | None = None
    max_shard_size: int = 5_000_000_000
    split_max_size: int = 0
    pre_tokenizer: str | None = None
    with_past: bool = False
    opset: int = 18
    threads: int = 2
    imatrix: str | None = None              # a llama.cpp importance matrix file (GGUF or legacy .dat)
    imatrix_corpus: str | None = None       # or a text (FILE or "builtin") to compute one from
    imatrix_ctx: int | None = None
    imatrix_tokens: int | None = None
    save_imatrix: str | None = None         # where to keep the one used, in llama-imatrix's GGUF format

    def changed(self) -> list[str]:
        """The settings that differ from their defaults (the ones the user gave)."""
        default = WriteSettings()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]


@dataclass(frozen=True)
class Format:
    name: str                                                       # "hf", "gguf", ...
    sniff: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], "ModelBundle"] | None = None
    write: Callable[["ModelBundle", Path, Any], dict] | None = None
    options: Callable[[WriteSettings], Any] | None = None           # this format's typed options
    takes: frozenset[str] = frozenset({"threads"})                  # WriteSettings fields it uses
    output: Literal["folder", "files"] = "folder"                   # a folder at DST, or files named after DST
    suffix: str | None = None                                       # a DST ending in it means this format
    runtime: str = "transformers"                                   # runtimes/: what runs a file of it
    check: Callable[[Path], None] | None = None                     # headers and tables checked, no config needed
    describe: Callable[["ModelBundle", Any], list[dict]] | None = None   # --debug-params rows, when names change
    # to this same format without the interchange (GGUF -> GGUF keeps what no bundle carries): source, target
    transcode: Callable[[Path, Path, Any], dict] | None = None
    # what a file holds beyond the bundle, from its header (GGUF: file type, tensor types, vocabulary), for inspect
    details: Callable[[Path], dict] | None = None
    adapter: bool = False                                           # its files are LoRA adapters, not models
    writes_adapters: bool = False                                   # `write` takes an adapter bundle too
