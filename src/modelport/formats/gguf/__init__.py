"""GGUF files (llama.cpp's format): read from any type gguf-py can dequantize, written at any file type."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...storage import byte_source
from ..base import Format, ReadOptions, WriteSettings

MAGIC = b"GGUF"


def sniff(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix == ".gguf":
        return True
    return bytes(byte_source(path).read(0, 4)) == MAGIC


@dataclass(frozen=True)
class GGUFOptions:
    quant: str | None                   # llama.cpp file type name; None: from --dtype or the source
    dtype: str | None
    split_max_size: int = 0
    pre_tokenizer: str | None = None
    threads: int = 2

    @classmethod
    def from_settings(cls, settings: WriteSettings) -> "GGUFOptions":
        if settings.quant is not None:
            from .quant_types import file_type
            file_type(settings.quant)                  # an unknown type is a usage error now, not after reading
        if settings.pre_tokenizer is not None:
            from .pretokenizer import unknown
            if (error := unknown(settings.pre_tokenizer)) is not None:
                raise error
        return cls(settings.quant, settings.dtype, settings.split_max_size, settings.pre_tokenizer, settings.threads)


def _read(path: Path, options: ReadOptions):
    from .reader import read
    return read(path, options)


def _write(bundle, path: Path, options: GGUFOptions) -> dict:
    """A model, or a LoRA adapter bundle as a GGUF LoRA adapter (adapter.py)."""
    if bundle.adapter is not None:
        from .adapter import write as write_adapter
        return write_adapter(bundle, path, options)
    from .writer import write
    return write(bundle, path, options)


def _describe(bundle, options: GGUFOptions) -> list[dict]:
    if bundle.adapter is not None:
        from .adapter import describe as describe_adapter
        return describe_adapter(bundle, options)
    from .writer import describe
    return describe(bundle, options)


def _transcode(src: Path, path: Path, options: GGUFOptions) -> dict:
    from .requantize import write
    return write(src, path, options)


def _details(path: Path) -> dict:
    from .summary import details
    return details(path)


def _check(path: Path) -> None:
    from .reader import checked_header
    checked_header(path)


FORMAT = Format("gguf", sniff, _read, _write, GGUFOptions.from_settings,
                takes=frozenset({"quant", "dtype", "split_max_size", "pre_tokenizer", "threads"}),
                output="files", suffix=".gguf", runtime="llama.cpp", check=_check, describe=_describe,
                transcode=_transcode, details=_details, writes_adapters=True)
