"""Every remote call goes through `call`: transient failures retried with backoff and jitter, the rest
turned into one line naming the URL (never a secret) with the CLI's exit code.

Transient: an HTTP 5xx, 429 or 408 (S3's SlowDown, a CDN's 503), a timeout, a refused or reset
connection, a body cut off mid-read, a read returning fewer bytes than asked. Permanent: no such
bucket or key, access denied, no credentials, a malformed request.

The budget (defaults in README.md): MODELPORT_RETRIES attempts per call (12), waits doubling from
MODELPORT_RETRY_WAIT seconds (0.5) up to 8 s, each scaled by a random factor in [0.5, 1] so many
readers do not retry in step, and no more than MODELPORT_RETRY_SECONDS (60) of waiting in all.
Each retry is logged at debug level. The waits of 12 attempts add up to between 31 and 60 s.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..core.errors import ModelConnectionError, ModelportError, UsageError
from .urls import redact

log = logging.getLogger("modelport.storage")
T = TypeVar("T")

TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "429", "408"}
MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload", "RepoNotFound", "EntryNotFound",
                 "RevisionNotFound"}
DENIED_CODES = {"AccessDenied", "403", "401", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "AllAccessDisabled"}
TRANSIENT_NAMES = ("Timeout", "ConnectionReset", "ConnectionRefused", "ConnectionClosed", "ConnectionError",
                   "ServerDisconnected", "ClientPayloadError", "ClientConnectorError", "EndpointConnectionError",
                   "IncompleteRead", "ResponseStreamingError", "RemoteDisconnected", "ProtocolError",
                   "ReadError", "ConnectError", "ShortRead", "ClientOSError", "HTTPClientError",
                   "ProxyError")         # gcsfs raises requests' ProxyError for a 502
NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound")


class ShortRead(OSError):
    """A ranged read returned fewer bytes than the object holds there: the body was cut off."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 12          # with the waits below: at least 31 s of waiting, so a 30 s outage is ridden out
    first_wait: float = 0.5
    max_wait: float = 8.0
    budget_seconds: float = 60.0

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise UsageError(f"{name}={raw!r} is not a number") from None
        return cls(attempts=max(1, int(number("MODELPORT_RETRIES", cls.attempts))),
                   first_wait=number("MODELPORT_RETRY_WAIT", cls.first_wait),
                   budget_seconds=number("MODELPORT_RETRY_SECONDS", cls.budget_seconds))

    def wait(self, attempt: int) -> float:
        return min(self.max_wait, self.first_wait * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _codes(exc: BaseException) -> set[str]:
    """The error codes and HTTP statuses anything in the exception's chain carries."""
    codes: set[str] = set()
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):              # botocore ClientError
            codes.add(str(response.get("Error", {}).get("Code", "")))
            codes.add(str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")))
        elif response is not None:                  # requests / httpx responses (huggingface_hub)
            codes.add(str(getattr(response, "status_code", "")))
            codes.add(str(getattr(response, "headers", {}).get("X-Error-Code", "")))
        for attr in ("status", "status_code", "code"):
            value = getattr(e, attr, None)
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                codes.add(str(value))
    codes.discard("")
    return codes


def _forbidden(e: BaseException) -> bool:
    """gcsfs's answer to an HTTP 403: a bare OSError whose message starts "Forbidden:" (no errno, no code)."""
    return type(e) is OSError and e.errno is None and str(e).startswith("Forbidden")


def transient(exc: BaseException) -> bool:
    # google-auth marks a token refresh that failed for a server's or network's reason (a 5xx or 429 from
    # the token endpoint) retryable; gcsfs wraps every refresh failure in a 401 that says nothing of it
    if any(getattr(e, "retryable", None) is True for e in _chain(exc)):
        return True
    codes = _codes(exc)
    if codes & (MISSING_CODES | DENIED_CODES):
        return False
    if codes & TRANSIENT_CODES or any(c.isdigit() and 500 <= int(c) < 600 for c in codes):
        return True
    names = {type(e).__name__ for e in _chain(exc)}
    if any(part in name for name in names for part in TRANSIENT_NAMES):
        return True
    return any(isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT,
                                                      errno.EPIPE, errno.ECONNABORTED) for e in _chain(exc))


def failure(exc: BaseException, url: str, gave_up: str = "") -> ModelportError:
    """The one line a user sees for `exc` on `url`: what is wrong and what to check, with no secret."""
    if isinstance(exc, ModelportError):
        return exc
    url = redact(url)
    codes = _codes(exc)
    names = {type(e).__name__ for e in _chain(exc)}
    if names & set(NO_CREDENTIALS):
        return UsageError("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)",
                          url)
    if "NoSuchBucket" in codes:
        return UsageError("no such bucket", url)
    if codes & MISSING_CODES or any(isinstance(e, FileNotFoundError) for e in _chain(exc)):
        return UsageError("no such file or folder", url)
    if codes & DENIED_CODES or any(isinstance(e, PermissionError) or _forbidden(e) for e in _chain(exc)):
        return UsageError("access denied (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                          "AWS_PROFILE for s3://, GOOGLE_APPLICATION_CREDENTIALS or gcloud's login for gs://, HF_TOKEN "
                          "for hf://)", url)
    detail = redact(" ".join(str(exc).split()))[:200] or type(exc).__name__
    if gave_up:
        return ModelConnectionError(f"{gave_up}: {type(exc).__name__}: {detail}", url)
    return ModelConnectionError(f"{type(exc).__name__}: {detail}", url)


def call(fn: Callable[[], T], url: str, policy: RetryPolicy | None = None) -> T:
    """`fn()`, retried while it fails transiently and the budget lasts; any failure is a ModelportError."""
    policy = policy or RetryPolicy.from_env()
    waited, attempt = 0.0, 0
    while True:
        attempt += 1
        try:
            return fn()
        except ModelportError:
            raise
        except Exception as exc:
            if not transient(exc):
                raise failure(exc, url) from exc
            pause = policy.wait(attempt)
            if attempt >= policy.attempts or waited + pause > policy.budget_seconds:
                raise failure(exc, url, f"gave up after {attempt} attempts over {waited:.0f} s") from exc
            log.debug("retry %d of %s in %.2f s after %s: %s", attempt, redact(url), pause, type(exc).__name__,
                      redact(str(exc))[:200])
            time.sleep(pause)
            waited += pause
