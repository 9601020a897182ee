"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving folders under ROOT as `org/name` models.

    python fake_hub.py ROOT FAIL_GETS      (prints its port, then serves until killed)

The first FAIL_GETS file downloads (GET on /resolve/) answer 503, as a flaky CDN does; metadata
(HEAD) and the model-info API always answer. Every request is logged to stderr.

What HfFileSystem reads through is served too: the tree API (one folder or recursive), paths-info,
and ranged GETs on /resolve/ (206). So is what HfApi.create_commit and create_tag send: preupload
answers "regular" for every file, a commit's NDJSON body is applied to the folder, and every commit
and tag is appended to ROOT/org/name.commits.jsonl, which the tests read.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import sys
import urllib.parse
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
        if parts[:2] == ["api", "models"] and ("revision" in parts or len(parts) == 4):
            repo = "/".join(parts[2:parts.index("revision")] if "revision" in parts else parts[2:])
            folder = self.root / repo
            if not folder.is_dir():
                return self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound"}, send_body)
            siblings = [{"rfilename": str(p.relative_to(folder))} for p in sorted(folder.rglob("*")) if p.is_file()]
            body = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}).encode()
            return self._reply(200, body, {"Content-Type": "application/json"}, send_body)
        if parts[:2] == ["api", "models"] and "tree" in parts:
            at = parts.index("tree")
            folder = self.root / "/".join(parts[2:at])
            if not folder.is_dir():
                return self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound"}, send_body)
            sub = urllib.parse.unquote("/".join(parts[at + 2:]))
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            start = folder / sub if sub else folder
            if not start.is_dir():
                return self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound"}, send_body)
            found = start.rglob("*") if query.get("recursive", ["false"])[0].lower() == "true" else start.iterdir()
            tree = [_entry(folder, p) for p in sorted(found) if not p.name.endswith(".commits.jsonl")]
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
        stat = path.stat()
        size = stat.st_size
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_sha256(path, stat.st_mtime_ns)}"', "Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):      # only the range is read, as a real server does
            first, _, last = wanted[6:].partition("-")
            begin, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
            headers["Content-Range"] = f"bytes {begin}-{end}/{size}"
            with open(path, "rb") as f:
                f.seek(begin)
                return self._reply(206, f.read(end + 1 - begin), headers, send_body)
        self._reply(200, path.read_bytes(), headers, send_body)

    def do_POST(self) -> None:
        print(self.command, self.path, file=sys.stderr, flush=True)
        parts = self.path.split("?")[0].strip("/").split("/")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if parts == ["api", "validate-yaml"]:
            return self._reply(200, b"{}", {"Content-Type": "application/json"})
        verb = next((v for v in ("paths-info", "preupload", "commit", "tag") if v in parts[3:]), None)
        if parts[:2] != ["api", "models"] or verb is None:
            return self._reply(404)
        at = parts.index(verb, 3)
        repo = "/".join(parts[2:at])
        folder = self.root / repo
        if verb == "paths-info":
            if not folder.is_dir():
                return self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound"})
            form = _form(body, self.headers.get("Content-Type", ""))
            found = [_entry(folder, folder / p) for p in form.get("paths", []) if (folder / p).exists()]
            return self._reply(200, json.dumps(found).encode(), {"Content-Type": "application/json"})
        folder.mkdir(parents=True, exist_ok=True)
        if verb == "preupload":
            files = json.loads(body).get("files", [])
            answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            return self._reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        if verb == "commit":
            summary, written = "", []
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    summary = item["value"].get("summary", "")
                elif item["key"] == "file":
                    target = folder / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
                    written.append(item["value"]["path"])
            oid = hashlib.sha1(f"{repo}{summary}{written}".encode()).hexdigest()
            _record(folder, {"kind": "commit", "summary": summary, "files": written, "oid": oid})
            answer = {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{oid}", "commitOid": oid}
            return self._reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        request = json.loads(body)
        _record(folder, {"kind": "tag", "tag": request.get("tag"), "revision": parts[at + 1] if len(parts) > at + 1
                         else None, "message": request.get("message")})
        return self._reply(200, b"{}", {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self._handle(False)

    def do_GET(self) -> None:
        self._handle(True)

    def log_message(self, *args) -> None:
        pass


_DIGESTS: dict[tuple[str, int], str] = {}


def _sha256(path: Path, mtime_ns: int) -> str:
    """The file's sha256, computed once per version of it (range requests must not each hash the file)."""
    key = (str(path), mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def _entry(repo: Path, path: Path) -> dict:
    name = str(path.relative_to(repo))
    if path.is_dir():
        return {"type": "directory", "path": name, "oid": hashlib.sha1(name.encode()).hexdigest()}
    data = path.read_bytes()
    return {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
            "lastCommit": {"id": COMMIT, "title": "fake", "date": "2026-01-01T00:00:00.000Z"}}


def _form(body: bytes, content_type: str) -> dict:
    if "json" in content_type:
        return json.loads(body)
    return urllib.parse.parse_qs(body.decode())


def _record(folder: Path, event: dict) -> None:
    with open(folder.parent / f"{folder.name}.commits.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    Hub.root, Hub.fail_gets = Path(sys.argv[1]), int(sys.argv[2])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    print(server.server_address[1], flush=True)
    server.serve_forever()
