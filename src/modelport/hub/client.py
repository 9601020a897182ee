"""Hugging Face Hub access through huggingface_hub, with our own retries around each call.

huggingface_hub already retries a failed metadata request a few times, but a download that fails
after its metadata succeeded (a 5xx or a dropped connection on the GET) is raised at once. Each
call here is retried as a whole, with exponential backoff, on errors that can pass (5xx, 408,
429, network errors); a missing repository or file, a refused token, or offline mode fail at once.
`HF_TOKEN` or `--token` authenticates; `HF_HUB_OFFLINE=1` is respected (only the local cache is used).
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from ..core.errors import ModelConnectionError, ModelFileNotFoundError, UsageError

log = logging.getLogger("modelport")
T = TypeVar("T")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# What a model conversion needs from a repository (weights, config, tokenizer), not its other files.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "pytorch_model*.bin"]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3            # attempts after the first
    delay: float = 2.0          # seconds before the first retry; doubles each time
    max_delay: float = 60.0

    def delays(self) -> list[float]:
        return [min(self.delay * 2 ** i, self.max_delay) for i in range(self.retries)]


def is_hub_id(value: str) -> bool:
    return not Path(value).expanduser().exists() and bool(HUB_ID.match(value)) and not value.startswith((".", "~"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError
    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        return response is not None and response.status_code in RETRY_STATUS
    try:
        import httpx
        if isinstance(exc, httpx.TransportError):
            return True
    except ImportError:
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def _fatal(exc: BaseException, repo: str, what: str) -> Exception | None:
    """A clear error for failures no retry can fix, or None."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    if isinstance(exc, GatedRepoError):
        return ModelFileNotFoundError(f"{repo} is gated: accept its terms on the Hub and pass --token or HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelFileNotFoundError("no such model on the Hub (or it is private: pass --token or set HF_TOKEN)",
                                      repo)
    if isinstance(exc, RevisionNotFoundError):
        return ModelFileNotFoundError("no such revision", repo)
    if isinstance(exc, LocalEntryNotFoundError) and offline():     # a subclass of EntryNotFoundError
        return ModelConnectionError(f"offline mode (HF_HUB_OFFLINE) and {what} is not in the local cache", repo)
    if isinstance(exc, EntryNotFoundError):
        return ModelFileNotFoundError(f"not found on the Hub: {what}", repo)
    return None


def call(what: str, repo: str, fn: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(), retried per `policy` on transient errors; ModelConnectionError once they are used up."""
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except Exception as exc:  # huggingface_hub and httpx raise many types; sort them here
            fatal = _fatal(exc, repo, what)
            if fatal is not None:
                raise fatal from exc
            if not _transient(exc):
                raise ModelConnectionError(f"fetching {what} failed: {type(exc).__name__}: {exc}", repo) from exc
            if attempt == len(delays):
                raise ModelConnectionError(f"fetching {what} failed after {attempt + 1} attempts: "
                                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", repo) from exc
            log.warning("%s: fetching %s failed (%s); retry %d of %d in %.1f s", repo, what,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, attempt + 1, len(delays),
                        delays[attempt])
            sleep(delays[attempt])
    raise AssertionError("unreachable")


def cached_file(repo: str, filename: str) -> Path | None:
    """The file from the local hub cache (no network), if an earlier download put it there."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def download(repo: str, filename: str, policy: RetryPolicy, token: str | None = None) -> Path:
    from huggingface_hub import hf_hub_download
    return Path(call(filename, repo, lambda: hf_hub_download(repo, filename, token=token), policy))


def has_file(repo: str, filename: str, policy: RetryPolicy, token: str | None = None) -> bool:
    from huggingface_hub import file_exists
    if offline():
        return cached_file(repo, filename) is not None
    return bool(call(f"whether it has {filename}", repo, lambda: file_exists(repo, filename, token=token), policy))


def snapshot(repo: str, policy: RetryPolicy, token: str | None = None) -> Path:
    """A local folder with the repository's config, tokenizer and weights (the hub cache's snapshot)."""
    from huggingface_hub import snapshot_download
    if not is_hub_id(repo):
        raise UsageError("not a local path, and not a Hub model id", repo)
    return Path(call("the model files", repo, lambda: snapshot_download(
        repo, token=token, allow_patterns=MODEL_PATTERNS, local_files_only=offline()), policy))
