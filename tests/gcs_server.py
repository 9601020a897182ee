"""A Google Cloud Storage JSON-API server on 127.0.0.1 for the gs:// tests.

gcp-storage-emulator (a PyPI package, pure Python) keeps buckets and objects in memory and answers
the calls gcsfs makes: list, object metadata, media download by Range, simple and resumable upload,
delete. modelport reaches it through gcsfs exactly as it reaches Google, pointed there by the
variable gcsfs reads itself (STORAGE_EMULATOR_HOST). The emulator checks no credentials; a bad one
is shown by a service-account key whose token endpoint (`token_uri`, honoured by google-auth) is a
local server refusing every grant. Each request is counted by method, each media GET's Range noted
(as the S3 tests count GETs at their proxy), and `fail` answers the next requests with an error
status before the emulator sees them.
"""
from __future__ import annotations

import collections
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
from s3_server import free_port

# an OAuth refresh token never sent anywhere; a test asserts it reaches no output
SECRET_TOKEN = "modelport-gcs-test-secret-9d41b7"


class GCSServer:
    def __init__(self) -> None:
        import logging

        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage
        logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
        self.methods: collections.Counter[str] = collections.Counter()
        self.ranges: list[str] = []                 # the Range header of each media GET ("" for none)
        self._lock = threading.Lock()
        self.storage = Storage(use_memory_fs=True)
        server = self

        class Counting(RequestHandler):
            def parse_request(self) -> bool:
                ok = super().parse_request()
                if ok:
                    with server._lock:
                        server.methods[self.command] += 1
                        if self.command == "GET" and "alt=media" in self.path:
                            server.ranges.append(self.headers.get("Range", ""))
                return ok

            def _answer(self) -> None:
                status = server.next_fault(self.command)
                if status is None:
                    getattr(super(), f"do_{self.command}")()
                    return
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"error": {"code": status, "message": "injected"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, *args) -> None:
                pass

        self.faults: list[tuple[int, str | None]] = []
        self.injected = 0
        # one request at a time, as the emulator's own server: its in-memory store is not thread-safe
        self.httpd = _Quiet(("127.0.0.1", free_port()), lambda *a: Counting(self.storage, *a))
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def fail(self, n: int, status: int | None = 503, method: str | None = None) -> None:
        """Answer the next n requests of `method` (any if None) with `status` before the emulator sees
        them; a status of None lets them through (to fail the ones after)."""
        with self._lock:
            self.faults += [(status, method)] * n

    def next_fault(self, method: str) -> int | None:
        with self._lock:
            for i, (status, wanted) in enumerate(self.faults):
                if wanted is None or wanted == method:
                    del self.faults[i]
                    self.injected += status is not None
                    return status
        return None

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.HTTPServer):
    """No traceback on stderr (where the CLI's one line is checked) when a client hangs up mid-answer,
    as a command that has failed does to the reads still in flight."""

    def handle_error(self, request, client_address) -> None:
        import sys
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Refuse(http.server.BaseHTTPRequestHandler):
    """An OAuth token endpoint that refuses every grant, as Google's does a revoked key."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def gcs_server():
    server = GCSServer()
    refuse = http.server.HTTPServer(("127.0.0.1", free_port()), _Refuse)
    threading.Thread(target=refuse.serve_forever, daemon=True).start()
    server.token_uri = f"http://127.0.0.1:{refuse.server_address[1]}/token"
    yield server
    refuse.shutdown()
    refuse.server_close()
    server.stop()


@pytest.fixture
def gcs(gcs_server, monkeypatch, tmp_path):
    """The environment pointing modelport at the server with no credentials of its own (gcsfs then goes
    anonymous, as for a public bucket), and a gcsfs client of the tests' own."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))       # no gcloud login to find
    monkeypatch.setenv("MODELPORT_RETRY_WAIT", "0.02")
    monkeypatch.setenv("MODELPORT_CACHE_DIR", str(tmp_path / "cache"))
    from modelport.storage import urls
    urls.filesystem.cache_clear()
    from gcsfs.core import GCSFileSystem
    client = GCSFileSystem(token="anon", endpoint_url=gcs_server.endpoint, skip_instance_cache=True,
                           use_listings_cache=False)
    gcs_server.clear()
    yield client, gcs_server
    gcs_server.clear()
    urls.filesystem.cache_clear()


def bad_key(tmp_path: Path, token_uri: str) -> Path:
    """A service-account key file with a real (fresh) RSA key, for an account the token endpoint refuses."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "modelport-test", "private_key_id": SECRET_TOKEN,
        "private_key": pem, "client_email": "nobody@modelport-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri}))
    return path


_buckets = iter(range(10_000))


def bucket(client) -> str:
    name = f"bucket-{os.getpid()}-{next(_buckets)}"
    client.mkdir(name)
    return name
