"""A conversion request, checked once before any file is read: the Python API's keywords and the CLI's
flags both become one `ConvertOptions`, and each writer receives only its own typed options."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.dtypes import parse_dtype
from ..core.errors import UsageError
from ..core.sizes import parse_size
from ..edits import Edits
from ..formats import FORMATS, Format, ReadOptions, WriteSettings
from ..formats.base import FLAGS


@dataclass(frozen=True)
class ConvertOptions:
    to: str | None = None                     # a format name; None: from DST's suffix
    read: ReadOptions = field(default_factory=ReadOptions)
    write: WriteSettings = field(default_factory=WriteSettings)
    checkpoint: str | None = None             # which checkpoint of a folder of them
    overwrite: bool = False
    allow_unused: bool = False                # drop source tensors no target takes, instead of failing
    debug_params: bool = False
    edits: Edits | None = None

    @classmethod
    def of(cls, *, to: str | None = None, dtype: str | None = "auto", base_model: str | Path | None = None,
           checkpoint: str | None = None, overwrite: bool = False, trust_remote_code: bool = False,
           threads: int | None = None, quant: str | None = None, max_shard_size: str | int = "5GB",
           split_max_size: str | int | None = None, pre_tokenizer: str | None = None, with_past: bool = False,
           opset: int = 18, allow_unused: bool = False, debug_params: bool = False,
           edits: Edits | None = None, merge_adapter: str | Path | None = None,
           imatrix: str | Path | None = None, imatrix_corpus: str | Path | None = None,
           imatrix_ctx: int | None = None, imatrix_tokens: int | None = None,
           save_imatrix: str | Path | None = None) -> "ConvertOptions":
        """The API's keywords (the CLI's flags, by the same names) parsed and checked."""
        if threads is not None and threads < 1:
            raise UsageError(f"--threads {threads}: needs at least one thread")
        if merge_adapter is not None:
            edits = replace(edits or Edits(), merge_adapter=Path(merge_adapter).expanduser())
        if edits and edits.merge_adapter and not edits.merge_adapter.is_dir():
            raise UsageError("--merge-adapter: no such folder", edits.merge_adapter)
        write = WriteSettings(dtype=parse_dtype(dtype), quant=quant, max_shard_size=parse_size(max_shard_size),
                              split_max_size=parse_size(split_max_size) if split_max_size else 0,
                              pre_tokenizer=pre_tokenizer, with_past=with_past, opset=opset, threads=threads or 2,
                              imatrix=_text(imatrix), imatrix_corpus=_text(imatrix_corpus), imatrix_ctx=imatrix_ctx,
                              imatrix_tokens=imatrix_tokens, save_imatrix=_text(save_imatrix))
        base = Path(base_model).expanduser() if base_model is not None else None
        return cls(to, ReadOptions(base, trust_remote_code, pre_tokenizer), write, checkpoint, overwrite, allow_unused,
                   debug_params, edits)

    def writer_options(self, fmt: Format):
        """`fmt`'s own options; a setting it does not take is a usage error naming the formats that do."""
        for name in self.write.changed():
            if name not in fmt.takes:
                takers = [f.name.upper() for f in FORMATS if name in f.takes]
                raise UsageError(f"{FLAGS[name]} applies to {' and '.join(takers)} output only, not {fmt.name}")
        return fmt.options(self.write)


def _text(value: str | Path | None) -> str | None:
    return str(value) if value is not None else None
