"""Local files put under a URL, each checked after upload, none visible under its final name half-made.

An object store makes an object visible only when its upload completes (a single PUT, or the last
call of a multipart upload), so a file is uploaded straight to its final key: a reader sees the
whole file or nothing. Large files go up as multipart uploads whose parts are sized for the file,
several in flight. After each upload the object is read back by range and its sha256 compared
with the local file's; a mismatch fails the upload. Callers order the files so the one readers
follow (a split GGUF's first shard, a release's latest.json) goes last.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelConversionError, UsageError
from .retry import call
from .sources import RemoteSource
from .urls import Location

log = logging.getLogger("modelport.storage")

MIN_PART = 16 * 2**20            # S3 allows 10,000 parts of at least 5 MB
MAX_PARTS = 9_000
HASH_BLOCK = 64 * 2**20


@dataclass(frozen=True)
class Uploaded:
    name: str           # relative to the destination
    url: str
    size: int
    sha256: str


def part_size(size: int) -> int:
    """Parts for a file of `size` bytes: at least 16 MB, few enough that S3's part limit is never reached."""
    per_part = -(-size // MAX_PARTS)
    return max(MIN_PART, -(-per_part // 2**20) * 2**20)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def remote_sha256(location: Location, size: int) -> str:
    """The sha256 of the object at `location`, read back by range (parts in parallel)."""
    source = RemoteSource(location.fs, location.path, size, location.url)
    digest = hashlib.sha256()
    try:
        for offset in range(0, size, HASH_BLOCK):
            digest.update(source.read(offset, min(HASH_BLOCK, size - offset)))
    finally:
        source.close()
    return digest.hexdigest()


def exists(location: Location) -> bool:
    return bool(call(lambda: location.fs.exists(location.path), location.url))


def check_writable(location: Location, names: list[str], overwrite: bool) -> None:
    """Before any work: the bucket (or repository) must exist and be reachable with the credentials
    given, and no name the output will take may exist unless `overwrite`."""
    root = location.path.split("/", 1)[0] if location.scheme in ("s3", "gs") else location.parent.path
    call(lambda: location.fs.ls(root, detail=False), f"{location.scheme}://{root}")
    taken = [n for n in names if exists(location.child(n) if n else location)]
    if taken and not overwrite:
        raise UsageError(f"already exists: {', '.join(taken[:3])} (pass --overwrite to replace it)", location.url)


def put_file(local: Path, remote: Location) -> Uploaded:
    """Upload one file straight to its final key and check the object's sha256 against the file's."""
    size = local.stat().st_size
    digest = file_sha256(local)
    fs = remote.fs
    call(lambda: fs.put_file(str(local), remote.path, chunksize=part_size(size)), remote.url)
    stored = call(lambda: fs.size(remote.path), remote.url)
    if stored != size:
        raise ModelConversionError(f"uploaded {size} bytes but the store holds {stored}", remote.url)
    if remote_sha256(remote, size) != digest:
        raise ModelConversionError("the uploaded object's sha256 differs from the local file's", remote.url)
    log.debug("uploaded %s (%d bytes, sha256 %s)", remote.url, size, digest)
    return Uploaded(remote.path.rsplit("/", 1)[-1], remote.url, size, digest)


def put_tree(folder: Path, destination: Location, last: list[str] = ()) -> list[Uploaded]:
    """Every file under `folder` to the same names under `destination`, the ones named in `last` after
    all others (in that order): the pointer readers follow appears only once the rest is in place."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    ordered = [n for n in names if n not in last] + [n for n in last if n in names]
    done = []
    for name in ordered:
        uploaded = put_file(folder / name, destination.child(name))
        done.append(Uploaded(name, uploaded.url, uploaded.size, uploaded.sha256))
    return done


def hub_repo(location: Location) -> tuple[str, str | None, str]:
    """(repo id, revision, path inside) of an hf://ORG/NAME[@REVISION][/PATH] location."""
    org, name, *inside = location.path.split("/")
    name, _, revision = name.partition("@")
    return f"{org}/{name}", revision or None, "/".join(inside)


def hub_api():
    import os

    from huggingface_hub import HfApi
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)


def commit_tree(folder: Path, location: Location, message: str, tag: str | None = None) -> str:
    """Every file under `folder` in one commit to the Hub repository `location` names (under its path),
    tagged `tag`; returns the commit id. A commit is atomic: readers see all of it or none."""
    from huggingface_hub import CommitOperationAdd

    repo, revision, inside = hub_repo(location)
    api = hub_api()
    operations = [CommitOperationAdd(path_in_repo=f"{inside}/{rel}" if inside else rel, path_or_fileobj=str(path))
                  for path in sorted(folder.rglob("*")) if path.is_file()
                  for rel in [str(path.relative_to(folder))]]
    info = call(lambda: api.create_commit(repo, operations, commit_message=message, revision=revision),
                location.url)
    if tag:
        call(lambda: api.create_tag(repo, tag=tag, revision=info.oid, tag_message=message), location.url)
    log.debug("committed %d files to %s as %s (tag %s)", len(operations), location.url, info.oid, tag)
    return info.oid
