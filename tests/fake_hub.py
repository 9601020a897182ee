"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving folders under ROOT as `org/name` models.

    python fake_hub.py ROOT FAIL_GETS      (prints its port, then serves until killed)

The first FAIL_GETS file downloads (GET on /resolve/) answer 503, as a flaky CDN does; metadata
(HEAD) and the model-info API always answer. Every request is logged to stderr.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import sys
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub(http.server.BaseHTTPRequestHandler):
    root: Path
    fail_gets = 0

    def _reply(self, code: int, body: bytes = b"", headers: dict | None = None, send_body: bool = True) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _handle(self, send_body: bool) -> None:
        print(self.command, self.path, file=sys.stderr, flush=True)
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "models"] and "revision" in parts:
            repo = "/".join(parts[2:parts.index("revision")])
            folder = self.root / repo
            if not folder.is_dir():
                return self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound"}, send_body)
            siblings = [{"rfilename": str(p.relative_to(folder))} for p in sorted(folder.rglob("*")) if p.is_file()]
            body = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}).encode()
            return self._reply(200, body, {"Content-Type": "application/json"}, send_body)
        if parts[:2] == ["api", "models"] and "tree" in parts:
            folder = self.root / "/".join(parts[2:parts.index("tree")])
            tree = [{"type": "file", "path": str(p.relative_to(folder)), "size": p.stat().st_size,
                     "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in sorted(folder.rglob("*")) if p.is_file()]
            return self._reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, send_body)
        if "resolve" not in parts:
            return self._reply(404, b"", {}, send_body)
        at = parts.index("resolve")
        repo, name = "/".join(parts[:at]), "/".join(parts[at + 2:])
        if not (self.root / repo).is_dir():
            return self._reply(404, b"", {"X-Error-Code": "RepoNotFound"}, send_body)
        path = self.root / repo / name
        if not path.is_file():
            return self._reply(404, b"", {"X-Error-Code": "EntryNotFound"}, send_body)
        if self.command == "GET" and Hub.fail_gets > 0:
            Hub.fail_gets -= 1
            return self._reply(503, b"busy", {}, send_body)
        data = path.read_bytes()
        self._reply(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, send_body)

    def do_HEAD(self) -> None:
        self._handle(False)

    def do_GET(self) -> None:
        self._handle(True)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    Hub.root, Hub.fail_gets = Path(sys.argv[1]), int(sys.argv[2])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    print(server.server_address[1], flush=True)
    server.serve_forever()
