"""Local files put under a URL, each checked after upload, none visible under its final name half-made.

An object store makes an object visible only when its upload completes (a single PUT, or the last
call of a multipart upload), so a file is uploaded straight to its final key: a reader sees the
whole file or nothing. Large files go up as multipart uploads whose parts are sized for the file,
several in flight. Every upload is checked against the file's sha256. A multipart upload to a store
that speaks S3 needs no second transfer: each part carries its SHA-256 (S3 refuses a part whose
bytes differ), and the checksum the store computes over the parts when it completes the upload
(COMPOSITE: the SHA-256 of the parts' SHA-256s, "-N") must be the one computed here from the same
reads that fed the upload. On GCS, the MD5 it reports of the stored object (`md5Hash`) must be the
file's. A file of one part on an S3 store, or on another store, is read back by range and hashed. A mismatch fails the upload and removes the object. Callers order the files so the one readers follow (a split GGUF's
first shard, a release's latest.json) goes last.
"""
from __future__ import annotations

import base64
import hashlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ModelConversionError, UsageError
from .retry import call
from .sources import RemoteSource
from .urls import Location, is_url, parse, speaks_s3

log = logging.getLogger("modelport.storage")

MIN_PART = 16 * 2**20            # S3 allows 10,000 parts of at least 5 MB
MAX_PARTS = 9_000
HASH_BLOCK = 64 * 2**20
PARTS_IN_FLIGHT = 4              # memory: (PARTS_IN_FLIGHT + 1) parts


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


def file_digests(path: Path) -> tuple[str, str]:
    """The file's sha256 (hex: what manifests record) and MD5 (base64: what GCS reports of an object
    it holds, `md5Hash`), from one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), _b64(md5.digest())


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


def taken(target: str) -> bool:
    """Whether something is already under `target`, a path or a URL."""
    if not is_url(target):
        return Path(target).exists()
    location = parse(target)
    return location.local.exists() if location.local is not None else exists(location)


def check_writable(location: Location, names: list[str], overwrite: bool) -> None:
    """Before any work: the bucket (or repository) must exist and be reachable with the credentials
    given, and no name the output will take may exist unless `overwrite`."""
    root = location.path.split("/", 1)[0] if location.scheme in ("s3", "gs") else location.parent.path
    call(lambda: location.fs.ls(root, detail=False), f"{location.scheme}://{root}")
    taken = [n for n in names if exists(location.child(n) if n else location)]
    if taken and not overwrite:
        raise UsageError(f"already exists: {', '.join(taken[:3])} (pass --overwrite to replace it)", location.url)


def put_file(local: Path, remote: Location) -> Uploaded:
    """Upload one file straight to its final key and check the object against the file's sha256."""
    size = local.stat().st_size
    fs = remote.fs
    if speaks_s3(fs) and size > part_size(size):
        digest = _put_multipart_checked(local, remote, size)
    else:
        digest, md5 = file_digests(local)
        call(lambda: fs.put_file(str(local), remote.path, chunksize=part_size(size)), remote.url)
        # GCS reports the MD5 it computed of what it stored: no second transfer; elsewhere, a read-back
        reported = call(lambda: fs.info(remote.path), remote.url).get("md5Hash")
        if (reported != md5) if reported is not None else remote_sha256(remote, size) != digest:
            _remove(remote)
            raise ModelConversionError("the uploaded object's " + ("MD5" if reported else "sha256")
                                       + " differs from the local file's", remote.url)
    stored = call(lambda: fs.size(remote.path), remote.url)
    if stored != size:
        _remove(remote)
        raise ModelConversionError(f"uploaded {size} bytes but the store holds {stored}", remote.url)
    log.debug("uploaded %s (%d bytes, sha256 %s)", remote.url, size, digest)
    return Uploaded(remote.path.rsplit("/", 1)[-1], remote.url, size, digest)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _remove(remote: Location) -> None:
    try:
        call(lambda: remote.fs.rm_file(remote.path), remote.url)
    except Exception as exc:           # the mismatch is what the user must hear about
        log.debug("could not remove %s: %s", remote.url, exc)


def _put_multipart_checked(local: Path, remote: Location, size: int) -> str:
    """The file as a multipart upload whose parts carry their SHA-256; returns the file's sha256, hashed
    from the same reads that fed the upload (the file is read once, the object never read back)."""
    fs = remote.fs
    bucket, key, _ = fs.split_path(remote.path)

    def s3(method: str, **kw: Any) -> dict:
        return call(lambda: fs.call_s3(method, Bucket=bucket, Key=key, **kw), remote.url)

    whole = hashlib.sha256()
    upload = s3("create_multipart_upload", ChecksumAlgorithm="SHA256")["UploadId"]
    try:
        with open(local, "rb") as f:
            parts, digests = _upload_parts(f, part_size(size), whole,
                                           lambda **kw: s3("upload_part", UploadId=upload, **kw))
        answer = s3("complete_multipart_upload", UploadId=upload, MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            s3("abort_multipart_upload", UploadId=upload)
        except Exception as exc:
            log.debug("could not abort the upload to %s: %s", remote.url, exc)
        raise
    expected = f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"
    returned = (answer.get("ChecksumSHA256")        # S3 answers the completion with it; others only a HEAD
                or s3("head_object", ChecksumMode="ENABLED").get("ChecksumSHA256"))
    if returned is None:                # a store that keeps no checksums: read the object back
        returned = expected if remote_sha256(remote, size) == whole.hexdigest() else "a read-back"
    elif "-" not in returned:           # some stores leave the part count off
        returned = f"{returned}-{len(digests)}"
    if returned != expected:
        _remove(remote)
        raise ModelConversionError(f"the store's SHA-256 of the upload ({returned}) differs from the local "
                                   f"file's ({expected})", remote.url)
    return whole.hexdigest()


def _upload_parts(f: Any, part: int, whole: Any, upload_part: Any) -> tuple[list[dict], list[bytes]]:
    """Read `f` part by part (hashing it into `whole` on the way), PARTS_IN_FLIGHT uploads at once."""
    parts: list[dict] = []
    digests: list[bytes] = []
    pending: list[tuple[int, Future]] = []
    with ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="modelport-upload") as pool:
        try:
            while data := f.read(part):
                whole.update(data)
                digests.append(hashlib.sha256(data).digest())
                number = len(digests)
                pending.append((number, pool.submit(upload_part, PartNumber=number, Body=data,
                                                    ChecksumAlgorithm="SHA256",
                                                    ChecksumSHA256=_b64(digests[-1]))))
                del data
                while len(pending) >= PARTS_IN_FLIGHT:
                    parts.append(_part(*pending.pop(0)))
            while pending:
                parts.append(_part(*pending.pop(0)))
        finally:
            for _, future in pending:
                future.cancel()
    return parts, digests


def _part(number: int, future: Future) -> dict:
    answer = future.result()
    checksum = {"ChecksumSHA256": answer["ChecksumSHA256"]} if answer.get("ChecksumSHA256") else {}
    return {"PartNumber": number, "ETag": answer["ETag"], **checksum}


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
