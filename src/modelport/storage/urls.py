"""What a URL names: its scheme, the fsspec filesystem that serves it and the path inside it.

The one place that knows schemes. Endpoints and credentials come from the standard variables the
libraries read themselves (AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ..., HF_TOKEN,
HF_ENDPOINT, GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST); modelport never takes a secret on
its command line, so none can reach a message. A URL it cannot honour is refused, never turned into a local path.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

SCHEMES = ("s3", "gs", "hf", "https", "http", "file")
WRITABLE = ("s3", "gs", "file", "hf")
URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "HF_TOKEN",
                    "HUGGING_FACE_HUB_TOKEN")


def is_url(text: str | os.PathLike) -> bool:
    """True for anything of the form `scheme://...`, known or not (an unknown one is refused later)."""
    return isinstance(text, str) and URL.match(text) is not None


def redact(text: str) -> str:
    """`text` with every credential this process holds, and any user:password in a URL, blanked out."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


@dataclass(frozen=True)
class Location:
    """A parsed URL: `fs` serves `path` (the URL without its scheme, as fsspec names it)."""

    url: str                # as the user gave it, trailing slash removed
    scheme: str
    path: str

    @property
    def fs(self) -> Any:
        return filesystem(self.scheme)

    def child(self, name: str) -> "Location":
        return Location(f"{self.url}/{name}", self.scheme, f"{self.path}/{name}" if self.path else name)

    @property
    def local(self) -> "Path | None":
        """A file:// URL as the local path it names (written like any path); None for a remote store."""
        return Path(self.path) if self.scheme == "file" else None

    @property
    def objects(self) -> bool:
        """An object store a conversion may write into (each object uploaded whole, checked, then visible)."""
        return self.scheme in ("s3", "gs")

    @property
    def commits(self) -> bool:
        """A store of commits and tags (the Hub), not of objects replaced one by one."""
        return self.scheme == "hf"

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        url, path = self.url.rsplit("/", 1)[0], self.path.rsplit("/", 1)[0]
        return Location(url, self.scheme, path)


def parse(url: str) -> Location:
    """The Location `url` names; a malformed URL or one of a scheme modelport cannot read is a usage error."""
    found = URL.match(url)
    if found is None:
        raise UsageError("not a URL (expected scheme://...)", url)
    scheme, rest = found["scheme"].lower(), found["rest"].rstrip("/")
    if scheme not in SCHEMES:
        raise UsageError(f"unsupported URL scheme {scheme!r} (modelport reads s3://, gs://, hf://, https:// "
                         "and file://)", redact(url))
    if scheme == "file":
        if not rest.startswith("/"):
            raise UsageError("a file:// URL needs an absolute path (file:///folder/model)", url)
        return Location(url.rstrip("/"), scheme, rest)
    if scheme in ("s3", "gs"):
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise UsageError(f"{scheme}:// needs a bucket ({scheme}://BUCKET/KEY)", url)
        return Location(url.rstrip("/"), scheme, rest)
    if scheme == "hf":
        parts = rest.split("/")
        if len(parts) < 2 or not all(parts[:2]) or "@" in parts[0]:
            raise UsageError("an hf:// URL names a repository: hf://ORG/NAME[@REVISION][/PATH]", url)
        return Location(url.rstrip("/"), scheme, rest)
    if not rest or rest.startswith("/"):
        raise UsageError(f"{scheme}:// needs a host", redact(url))
    return Location(url.rstrip("/"), scheme, url.rstrip("/"))


def local_path(url: str) -> Path | None:
    """The local path a file:// URL names, None for any other URL."""
    return parse(url).local


def speaks_s3(fs: Any) -> bool:
    """Whether `fs` talks the S3 API itself (s3fs: for R2, MinIO and others too): a GET can stream from
    an offset, an upload can carry SHA-256 checksums the store checks and returns."""
    return hasattr(fs, "_call_s3") and hasattr(fs, "split_path")


@lru_cache(maxsize=None)
def filesystem(scheme: str) -> Any:
    """One fsspec filesystem per scheme and process. Library retries are turned off: storage/retry.py
    owns every retry, so one documented budget applies whatever the backend."""
    if scheme == "s3":
        import s3fs
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, profile=os.environ.get("AWS_PROFILE") or None,
                               config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"},
                                              "connect_timeout": 10, "read_timeout": 60},
                               use_listings_cache=False, skip_instance_cache=True)
        fs.retries = 1                      # s3fs's own retry loop (a class attribute)
        return fs
    if scheme == "gs":
        return _gcs_filesystem()
    if scheme == "hf":
        from huggingface_hub import HfFileSystem
        return HfFileSystem(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None,
                            skip_instance_cache=True)
    if scheme in ("http", "https"):
        from fsspec.implementations.http import HTTPFileSystem
        return HTTPFileSystem(skip_instance_cache=True)
    from fsspec.implementations.local import LocalFileSystem
    return LocalFileSystem()


def _gcs_filesystem() -> Any:
    """gcsfs's JSON-API filesystem, with gcsfs's own credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    application default, the metadata server, else anonymous) and endpoint (STORAGE_EMULATOR_HOST, else
    Google's). Not the class `gcsfs.GCSFileSystem` names by default since 2026 (ExtendedGcsFileSystem):
    that one first asks a gRPC control API for each bucket's layout, with retries of its own and a
    warning on stderr whenever it cannot, and an emulator does not serve it."""
    import aiohttp
    # With no credentials gcsfs goes anonymous (a public bucket); google-auth warns on the way (no
    # metadata server), a second line beside the CLI's one. A private bucket is then refused in one line.
    logging.getLogger("google.auth._default").setLevel(logging.ERROR)
    return _gcs_class()(requests_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60),
                        use_listings_cache=False, skip_instance_cache=True)


@lru_cache(maxsize=None)
def _gcs_class() -> type:
    """gcsfs's GCSFileSystem with its retry decorator (six attempts, up to 31 s of sleeps, a traceback
    logged when it gives up) taken off its three request methods, so storage/retry.py alone retries
    gs:// as it does every scheme. Made on first use (gcsfs is optional), reachable as this module's
    GCSUnretried so a filesystem pickles as s3fs's does."""
    try:
        from gcsfs.core import GCSFileSystem
    except ImportError:
        raise UsageError("gs:// needs gcsfs: pip install 'modelport[gcs]'") from None

    def unretried(name: str) -> Any:          # a later gcsfs without the decorator: its method as it is
        method = getattr(GCSFileSystem, name)
        return getattr(method, "__wrapped__", method)

    return type("GCSUnretried", (GCSFileSystem,), {
        "__module__": __name__, "_request": unretried("_request"),
        "_get_file_request": unretried("_get_file_request"),
        "_get_file_concurrent": unretried("_get_file_concurrent")})


def __getattr__(name: str) -> Any:
    if name == "GCSUnretried":
        return _gcs_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
