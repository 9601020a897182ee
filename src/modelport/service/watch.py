"""`modelport watch`: every new checkpoint of a training run becomes a verified, published version.

Each cycle publishes the newest complete checkpoint whose step is beyond the newest published one
(older unpublished checkpoints are skipped: downstream wants the newest model, not every one).
A failing checkpoint is recorded and retried with exponential backoff up to `max_attempts`; the
service keeps going. State lives in the registry, so a restart redoes nothing.

Signals: SIGTERM/SIGINT while idle stop at once; during a job they abandon it (its temporaries are
removed, the registry row says `abandoned`), and the service exits 0. After a SIGKILL the next
start removes what the dead process left and marks its row killed (it counts as an attempt).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from ..cluster import Cluster, Failure, node_id, require_url
from ..core.errors import ModelConversionError, ModelportError, UsageError
from ..files.atomic import check_apart, remove_path
from ..history import ABANDONED, FAILED, KILLED, PUBLISHED, History
from ..storage import parse
from .config import WatchConfig
from .discovery import Found
from .metrics import EventLog, ServiceMetrics
from .places import HubReleases, LocalReleases, LocalRun, RemoteReleases, RemoteRun
from .publish import Build, BuildOptions, build_version, write_manifest
from .versioning import newest_first, version_name

log = logging.getLogger("modelport")
COMMAND = "watch"


class ServiceStopped(BaseException):
    """Raised inside a running job by SIGTERM/SIGINT; BaseException so no `except Exception` swallows it."""


class WatchService:
    def __init__(self, config: WatchConfig) -> None:
        self.cfg = config
        self.run_dir, self.releases = places(config)
        self.cluster: Cluster | None = None     # --executor ray: where each version is built and published
        self.registry = History.open(config.registry)
        self.metrics = ServiceMetrics()
        self.events = EventLog(config.events_path)
        self.wake = threading.Event()
        self.stopping = False
        self.busy = False
        self.polling = False
        self.summary: dict = {"published": [], "failed": [], "pending": [], "retired": []}

    # ----- state kept in the registry -------------------------------------------------------------
    def _rows(self) -> list[dict]:
        """This service's attempts: those whose version folder is in OUTPUT, newest first."""
        return self.registry.rows(COMMAND, destination_in=self.releases.key)

    @staticmethod
    def _published(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["status"] == PUBLISHED]

    @staticmethod
    def _attempts(rows: list[dict], found: Found, sig: str) -> list[dict]:
        """Attempts that count against a checkpoint: failures and deaths (an OOM kill must not loop forever),
        not jobs stopped on purpose."""
        return [r for r in rows if r["source"] == str(found.path) and r["signature"] == sig
                and r["status"] in (FAILED, KILLED)]

    # ----- one cycle ------------------------------------------------------------------------------
    def cycle(self) -> float | None:
        """Publish at most one checkpoint; returns seconds until something becomes due (None: nothing)."""
        rows = self._rows()
        published = self._published(rows)
        newest = max((r["step"] for r in published if r["step"] is not None), default=None)
        due: list[float] = []
        now = time.time()
        try:
            candidates = self.run_dir.find()
        except ModelportError as exc:          # a listing that fails fails this cycle only
            self.metrics.failures.labels("list").inc()
            self.events.emit("list_failed", error=str(exc))
            log.error("watch: listing failed: %s", exc)
            return self.cfg.interval
        for found in reversed(candidates):
            if newest is not None and found.version_step <= newest:
                break
            sig = self.run_dir.signature(found)
            failed = self._attempts(rows, found, sig)
            if len(failed) >= self.cfg.max_attempts:
                continue
            if failed:
                ready_at = failed[0]["finished"] + self.cfg.backoff * 2 ** (len(failed) - 1)
                if ready_at > now:
                    due.append(ready_at - now)
                    self._note_pending(found, f"retry {len(failed) + 1} in {ready_at - now:.0f} s")
                    continue
            why = self.run_dir.unfinished(found, now)
            if why:
                due.append(max(self.cfg.settle, 1.0))
                self._note_pending(found, why)
                continue
            ok = self.process(found, sig, attempt=len(failed) + 1)
            if not ok:
                due.append(0.0 if len(failed) + 1 >= self.cfg.max_attempts else self.cfg.backoff)
            return min(due) if due else None
        return min(due) if due else None

    def _note_pending(self, found: Found, why: str) -> None:
        if all(p["path"] != str(found.path) for p in self.summary["pending"]):
            self.summary["pending"].append({"path": str(found.path), "reason": why})
            self.events.emit("pending", source=str(found.path), reason=why)

    # ----- one job --------------------------------------------------------------------------------
    def process(self, found: Found, sig: str, attempt: int) -> bool:
        cfg = self.cfg
        name = version_name(cfg.version, found.version_step)
        final = self.releases.destination(name)
        if self.releases.exists(name):
            raise UsageError(f"{name} already exists in the output folder but the registry has no record "
                             "of publishing it; move it away or use another --registry", cfg.output)
        row = self.registry.start(COMMAND, found.path, signature=sig, step=found.version_step, window=found.window,
                                  destination=final, attempt=attempt)
        self.events.emit("started", source=str(found.path), version=name, step=found.step, window=found.window,
                         attempt=attempt)
        log.info("watch: building %s from %s (attempt %d)", name, found.path, attempt)
        started = time.perf_counter()
        build = Build()
        self.busy = True
        try:
            if self.cluster is None:
                manifest = make_version(cfg, self.run_dir, self.releases, found, sig, name, build)
            else:
                manifest = self._on_cluster(found, sig, name, build)
        except ServiceStopped:
            self.busy = False
            self.registry.finish(row, ABANDONED, error="stopped by signal")
            self.metrics.conversions.labels("abandoned").inc()
            self.events.emit("abandoned", source=str(found.path), version=name)
            raise
        except ModelportError as exc:
            self.busy = False
            self.registry.finish(row, FAILED, error=str(exc), details={"stage": build.stage})
            self.metrics.conversions.labels("failed").inc()
            self.metrics.failures.labels(build.stage).inc()
            self.events.emit("failed", source=str(found.path), version=name, stage=build.stage, error=str(exc),
                             attempt=attempt)
            self.summary["failed"].append({"path": str(found.path), "stage": build.stage, "error": str(exc),
                                           "verification": build.verification or None})
            log.error("watch: %s failed at %s: %s", found.path, build.stage, exc)
            return False
        self.busy = False
        seconds = time.perf_counter() - started
        size = sum(f["size"] for f in manifest["files"])
        self.registry.finish(row, PUBLISHED, bytes_written=size,
                             details={"timings": manifest["timings"], "files": len(manifest["files"])})
        self._after_publish(name, found, manifest, seconds, size)
        return True

    def _on_cluster(self, found: Found, sig: str, name: str, build: Build) -> dict:
        """The version built and published by a Ray task (a node with the GPU, the bucket's credentials);
        this process keeps the loop, the registry and the metrics. A stop cancels the task."""
        cluster = self.cluster
        ref = cluster.submit(version_on_worker, self.demand, self.cfg, found, sig, name)
        self.polling = True              # a signal must not raise inside Ray's wait: it is checked here
        try:
            while not cluster.next_done([ref], timeout=0.5)[0]:
                if self.stopping:
                    cluster.cancel([ref])
                    raise ServiceStopped()
        finally:
            self.polling = False
        result = cluster.result(ref)
        if isinstance(result, Failure):
            raise ModelConversionError(result.error, found.path)
        vars(build).update(vars(result["build"]))
        log.info("watch: %s built on node %s", name, result["node"])
        if "error" in result:
            raise ModelportError(result["error"])
        self.summary.setdefault("nodes", {})[name] = result["node"]
        return result["manifest"]

    def _after_publish(self, name: str, found: Found, manifest: dict, seconds: float, size: int) -> None:
        releases = self.releases
        ours = {str(r["destination"]).rstrip("/").rsplit("/", 1)[-1] for r in self._published(self._rows())}
        newest = newest_first(sorted(releases.present(ours)))[0]
        releases.point_latest(newest, {"version": self.cfg.version, "global_step": found.step, "window": found.window,
                                       "created": manifest["created"]} if newest == name
                              else _summary(releases.manifest(newest)))
        retired = releases.retire(ours, self.cfg.keep)
        m = self.metrics
        m.conversions.labels("published").inc()
        m.duration.observe(seconds)
        m.bytes_written.inc(size)
        m.last_success.set_to_current_time()
        self._set_version_gauges(found.step, found.window)
        for artifact, report in (manifest["verification"] or {}).items():
            m.verify_cosine.labels(artifact).set(report["metrics"]["min_cosine"])
            m.verify_max_diff.labels(artifact).set(report["metrics"]["max_abs_diff"])
            if report["quality"]:
                m.verify_kld.labels(artifact).set(report["quality"]["kld_mean"])
                m.verify_same_top1.labels(artifact).set(report["quality"]["same_top1"])
        self.summary["published"].append(name)
        self.summary["retired"].extend(retired)
        self.events.emit("published", version=name, source=str(found.path), step=found.step, window=found.window,
                         seconds=round(seconds, 3), bytes=size, retired=retired)
        for old in retired:
            self.events.emit("retired", version=old)
        log.info("watch: published %s (%.1f s, %.1f MB)%s", name, seconds, size / 1e6,
                 f"; retired {', '.join(retired)}" if retired else "")

    def _set_version_gauges(self, step: int | None, window: int | None) -> None:
        if step is not None:
            self.metrics.global_step.set(step)
        if window is not None:
            self.metrics.window.set(window)

    # ----- the service ----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        self.run_dir.check()
        self.releases.check()
        if isinstance(cfg.checkpoint_dir, Path) and isinstance(cfg.output, Path):
            check_apart([cfg.checkpoint_dir] + ([cfg.base_model] if cfg.base_model else []), cfg.output)
        removed = self.releases.recover()
        killed = self.registry.mark_killed(COMMAND)
        if removed or killed:
            self.events.emit("recovered", removed=removed, killed_attempts=killed)
            log.info("watch: removed %d temporaries of a previous run; %d attempt(s) marked killed",
                     len(removed), killed)
        info = self.releases.latest()
        if info is not None:
            self._set_version_gauges(info.get("global_step"), info.get("window"))
            self.metrics.last_success.set(info["mtime"])
        if cfg.metrics_port is not None:
            self.metrics.serve(cfg.metrics_port, cfg.metrics_host)
            log.info("watch: metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
        self.events.emit("started_service", checkpoint_dir=str(cfg.checkpoint_dir), output=str(cfg.output),
                         version=cfg.version, quants=cfg.quants)

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.executor != "ray":
            if cfg.address or cfg.resources:
                raise UsageError("--address and --resources need --executor ray")
            return self._run()
        for key in ("checkpoint_dir", "output", "base_model", "corpus") if cfg.address else ():
            value = getattr(cfg, key)
            require_url(None if value is None else str(value), key)
        with Cluster(cfg.address) as cluster:
            self.demand = {"CPU": 1.0, **cfg.resources}
            cluster.wait_placeable([self.demand])
            self.cluster = cluster
            return self._run()

    def _run(self) -> dict:
        self.start()
        observer = None if self.cfg.once or self.run_dir.url else self._observe()       # a bucket is listed
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self.stopping:
                self.summary["pending"] = []
                due = self.cycle()
                if self.cfg.once:
                    break
                self.wake.clear()
                self.wake.wait(self.cfg.interval if due is None else min(self.cfg.interval, max(due, 0.2)))
        except ServiceStopped:
            log.info("watch: stopped during a job; it was abandoned and nothing was published")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if observer is not None:
                observer.stop()
        self.events.emit("stopped_service")
        latest = self.releases.latest()
        # A long-running service that stops cleanly succeeded even if some checkpoints failed (they are
        # recorded); a single --once cycle reports its own attempt's failure as exit 1.
        return {"ok": not (self.cfg.once and self.summary["failed"]), **self.summary,
                "latest": _summary(self.releases.manifest(latest["name"])) if latest else None}

    def _on_signal(self, signum: int, _frame) -> None:
        self.stopping = True
        self.wake.set()
        log.info("watch: %s received; stopping", signal.Signals(signum).name)
        if self.busy and not self.polling:
            self.busy = False
            raise ServiceStopped()

    def _observe(self):
        """Filesystem events wake the loop early; the interval stays the fallback."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        wake = self.wake

        class Waker(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type not in ("opened", "closed_no_write"):   # our own reads must not wake us
                    wake.set()

        observer = Observer()
        observer.schedule(Waker(), str(self.cfg.checkpoint_dir), recursive=True)
        observer.daemon = True
        observer.start()
        return observer


def places(cfg: WatchConfig):
    """Where checkpoints are found and versions published, from the settings alone (a Ray task
    rebuilds them on its node)."""
    run_dir = (LocalRun(cfg.checkpoint_dir, cfg.settle) if isinstance(cfg.checkpoint_dir, Path)
               else RemoteRun(cfg.checkpoint_dir, cfg.settle, cfg.ready_marker))
    releases = (LocalReleases(cfg.output) if isinstance(cfg.output, Path)
                else HubReleases(cfg.output, cfg.base_model and str(cfg.base_model))
                if parse(cfg.output).commits else RemoteReleases(cfg.output))
    return run_dir, releases


def make_version(cfg: WatchConfig, run_dir, releases, found: Found, sig: str, name: str, build: Build) -> dict:
    """Build version `name` of `found` in a staging folder (every artifact, verified; manifest.json)
    and publish it; its manifest is returned. On any failure or stop the staging folder is removed."""
    started = time.perf_counter()
    staging = releases.staging(name)
    try:
        options = BuildOptions(cfg.quants, cfg.base_model, cfg.dtype, cfg.verify, cfg.threads, cfg.allow_unused,
                               cfg.corpus_settings if cfg.verify else None, cfg.adapters_only, cfg.imatrix_settings)
        with run_dir.opened(found) as readable:
            build_version(readable, staging, options, build)
        manifest = write_manifest(staging, {
            "name": name, "version": cfg.version, "global_step": found.step, "window": found.window,
            "source": {"path": str(found.path), "signature": sig, "kind": build.kind},
            **({"base": build.base_files} if build.base_files else {}),
            "conversion": {"to": ["hf"] + [f"gguf:{q}" for q in cfg.quants], "dtype": cfg.dtype,
                           "base_model": cfg.base_model, "verify": cfg.verify,
                           "corpus": {"corpus": cfg.corpus, "ctx": cfg.ctx, "tokens": cfg.tokens} if cfg.corpus else None,
                           **({"imatrix": cfg.imatrix_settings} if cfg.imatrix or cfg.imatrix_corpus else {})},
            "verification": build.verification or None,
            "timings": {**build.timings, "total": round(time.perf_counter() - started, 3)},
        })
        build.stage = "publish"
        releases.publish(staging, name)
    except BaseException:
        remove_path(staging)
        raise
    return manifest


def version_on_worker(cfg: WatchConfig, found: Found, sig: str, name: str) -> dict:
    """The Ray task of `watch --executor ray`: make and publish one version on this node (its own
    cache for staging); the build record and manifest go back to the watch process."""
    run_dir, releases = places(cfg)
    build = Build()
    try:
        return {"manifest": make_version(cfg, run_dir, releases, found, sig, name, build), "build": build,
                "node": node_id()}
    except ModelportError as exc:
        return {"error": str(exc), "build": build, "node": node_id()}


def _summary(manifest: dict) -> dict:
    return {k: manifest.get(k) for k in ("name", "version", "global_step", "window", "created")}


def run(config: WatchConfig) -> dict:
    return WatchService(config).run()
