"""The record of every conversion attempt (watch, batch, ensure), in one SQLite file.

SQLite because it is embedded, transactional and readable by any tool; WAL mode so `modelport
history` can read while a service writes. The default file is shared by every command so one
`history` shows everything; `MODELPORT_REGISTRY` or `--registry` points elsewhere.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.errors import CorruptInputError, UsageError
from .files.atomic import process_alive
from .files.locations import history_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    source TEXT NOT NULL,
    signature TEXT,
    step INTEGER,
    window INTEGER,
    destination TEXT,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    started REAL NOT NULL,
    finished REAL,
    seconds REAL,
    bytes_written INTEGER,
    pid INTEGER,
    details TEXT
);
CREATE INDEX IF NOT EXISTS attempts_source ON attempts (command, source);
"""

# abandoned: stopped on purpose (a signal); killed: the process died mid-attempt, found at the next start.
RUNNING, PUBLISHED, FAILED, ABANDONED, KILLED = "running", "published", "failed", "abandoned", "killed"


@dataclass
class History:
    path: Path

    @staticmethod
    def location(path: str | Path | None = None) -> Path:
        return history_path(path)

    @classmethod
    def open(cls, path: str | Path | None = None) -> "History":
        """The registry at `path`, created (with its folders) if it is not there: for writers."""
        registry = cls(cls.location(path))
        registry.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(registry._connect()) as db:
            db.executescript(SCHEMA)
        return registry

    @classmethod
    def existing(cls, path: str | Path | None = None) -> "History | None":
        """The registry at `path` for reading, or None when there is none: reading never creates one."""
        location = cls.location(path)
        if not location.exists():
            return None
        if not location.is_file():
            raise UsageError("not a registry file", location)
        return cls(location)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise CorruptInputError(f"not a readable registry ({exc})", self.path) from exc
        return db

    def start(self, command: str, source: str | Path, *, signature: str | None = None, step: int | None = None,
              window: int | None = None, destination: str | Path | None = None, attempt: int = 1) -> int:
        with closing(self._connect()) as db:
            cur = db.execute(
                "INSERT INTO attempts (command, source, signature, step, window, destination, status, attempt,"
                " started, pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (command, str(source), signature, step, window, _str(destination), RUNNING, attempt, time.time(),
                 os.getpid()))
            return int(cur.lastrowid)

    def finish(self, row: int, status: str, *, error: str | None = None, bytes_written: int | None = None,
               details: dict | None = None) -> None:
        now = time.time()
        with closing(self._connect()) as db:
            db.execute(
                "UPDATE attempts SET status=?, error=?, finished=?, seconds=? - started, bytes_written=?, details=?"
                " WHERE id=?",
                (status, error, now, now, bytes_written, json.dumps(details, default=str) if details else None, row))

    def record(self, command: str, source: str | Path, status: str, **fields: Any) -> int:
        """One finished attempt in a single call (for work that is not long-running)."""
        finish = {k: fields.pop(k) for k in ("error", "bytes_written", "details") if k in fields}
        row = self.start(command, source, **fields)
        self.finish(row, status, **finish)
        return row

    def mark_killed(self, command: str) -> int:
        """Mark `running` rows whose process is gone as killed (it died mid-attempt)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT id, pid FROM attempts WHERE command=? AND status=?", (command, RUNNING)).fetchall()
            dead = [r["id"] for r in rows if not process_alive(r["pid"])]
            for row in dead:
                db.execute("UPDATE attempts SET status=?, error=?, finished=? WHERE id=?",
                           (KILLED, "the process ended before the attempt finished", time.time(), row))
        return len(dead)

    def rows(self, command: str | None = None, destination_in: Path | None = None,
             limit: int | None = None) -> list[dict]:
        """Attempts, newest first; `destination_in` keeps those whose destination is directly in that folder."""
        query, args = "SELECT * FROM attempts WHERE 1=1", []
        if command:
            query += " AND command=?"
            args.append(command)
        if destination_in is not None:
            prefix = str(destination_in).rstrip("/") + "/"
            query += " AND substr(destination, 1, ?) = ? AND instr(substr(destination, ?), '/') = 0"
            args += [len(prefix), prefix, len(prefix) + 1]
        query += " ORDER BY id DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        with closing(self._connect()) as db:
            try:
                return [_row(r) for r in db.execute(query, args)]
            except sqlite3.DatabaseError as exc:
                raise CorruptInputError(f"not a readable registry ({exc})", self.path) from exc


def _row(r: sqlite3.Row) -> dict:
    out = dict(r)
    if out.get("details"):
        out["details"] = json.loads(out["details"])
    return out


def _str(value: str | Path | None) -> str | None:
    return str(value) if value is not None else None
