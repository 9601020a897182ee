"""Storage: everything modelport reads or writes by URL (s3://, gs://, hf://org/name[@rev]/path,
https:// for one file, file://), through fsspec, behind the few calls the layers above use.

- `mounted(src)`: a path or URL as a local path the formats read (mirror.py); weight files of
  range-readable formats stay remote and are read by `byte_source(path)` (sources.py).
- `staged(path)`: the whole bytes of a file or folder, for libraries that open files themselves.
- `put_tree` / `put_file`: uploads checked against the file's sha256 (upload.py).
- `taken(target)`: whether a path or URL already holds something.
- `call`: one remote call with the retry budget, failures as one line naming the URL (retry.py).

Only urls.py knows a scheme; nothing above this layer branches on one.
"""
from __future__ import annotations

from .mirror import mounted, staged
from .retry import RetryPolicy, call
from .sources import byte_source
from .upload import taken
from .urls import Location, is_url, parse, redact

__all__ = ["Location", "RetryPolicy", "byte_source", "call", "is_url", "mounted", "parse", "redact", "staged", "taken"]
