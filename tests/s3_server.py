"""A real S3-compatible HTTP server on 127.0.0.1 for the storage tests, and a proxy in front of it that
injects faults.

moto's server mode (ThreadedMotoServer, as s3fs's own tests use it) listens on a free port; modelport
talks HTTP to it through s3fs and botocore exactly as to AWS, configured by the standard variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). `FaultProxy` forwards every request to moto unless told
to answer the next N with a 500/503, to cut the next N response bodies off half-way, or to flip a
byte in the next N request bodies.
"""
from __future__ import annotations

import collections
import http.client
import http.server
import os
import socket
import threading
import time
from contextlib import closing

import pytest

ACCESS_KEY = "AKIAMODELPORTTEST0001"
SECRET_KEY = "modelport-test-secret-5f1c2e9a7b"
REGION = "us-east-1"


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)       # no line per request on stderr
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()


class _Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: "FaultProxy"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _relay(self) -> None:
        body = self._body()
        if body and self.proxy.next_corruption(self.command):
            body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1:]
        if self.command in self.proxy.slow:
            time.sleep(self.proxy.slow[self.command])
        fault = self.proxy.next_fault(self.command)
        self.proxy.requests += 1
        self.proxy.methods[self.command] += 1
        self.proxy.log.append(f"{self.command} {self.path}")
        if fault is not None and fault != "drop":
            payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{'SlowDown' if fault == 503 else 'InternalError'}"
                       f"</Code><Message>injected</Message></Error>").encode()
            self.send_response(fault)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection", "expect")}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", self.proxy.upstream_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(key, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if fault == "drop" and len(data) > 1:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *args) -> None:
        pass


class FaultProxy:
    """Forwards to moto; `fail(n, status, method)` answers the next n matching requests with `status`
    (503 is S3's SlowDown), `drop(n, method)` sends the next n bodies half and closes the connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[tuple[object, str | None]] = []
        self.corruptions: list[str] = []
        self.requests = 0
        self.methods: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []
        self.injected = 0
        self.slow: dict[str, float] = {}          # method -> seconds each such request is held
        self._lock = threading.Lock()
        handler = type("Relay", (_Relay,), {"proxy": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, n: int, status: int = 503, method: str | None = None) -> None:
        with self._lock:
            self.faults += [(status, method)] * n

    def drop(self, n: int, method: str | None = "GET") -> None:
        with self._lock:
            self.faults += [("drop", method)] * n

    def corrupt(self, n: int, method: str = "PUT") -> None:
        """Flip one byte in the middle of the next n request bodies of `method` on the way to the server."""
        with self._lock:
            self.corruptions += [method] * n

    def next_corruption(self, method: str) -> bool:
        with self._lock:
            if method in self.corruptions:
                self.corruptions.remove(method)
                return True
            return False

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.corruptions.clear()
            self.slow.clear()

    def next_fault(self, method: str):
        with self._lock:
            for i, (fault, wanted) in enumerate(self.faults):
                if wanted is None or wanted == method:
                    del self.faults[i]
                    self.injected += 1
                    return fault
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    proxy = FaultProxy(server.port)
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch, tmp_path):
    """The environment pointing modelport at the server (through the fault proxy), and an s3fs client."""
    server, proxy = moto_server
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("MODELPORT_RETRY_WAIT", "0.02")
    monkeypatch.setenv("MODELPORT_CACHE_DIR", str(tmp_path / "cache"))
    from modelport.storage import urls
    urls.filesystem.cache_clear()
    proxy.clear()
    import s3fs
    client = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=server.endpoint,
                               skip_instance_cache=True, use_listings_cache=False)
    yield client, proxy
    proxy.clear()
    urls.filesystem.cache_clear()


_buckets = iter(range(10_000))


def bucket(client) -> str:
    name = f"bucket-{os.getpid()}-{next(_buckets)}"
    client.mkdir(name)
    return name
