"""What the watch service tells monitoring: Prometheus metrics and a JSON-lines event log.

The metrics live in their own CollectorRegistry (not the process-global one) so several services,
or tests, in one process never share counters. The endpoint binds to 127.0.0.1 unless told.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.conversions = Counter("modelport_conversions", "Checkpoint conversions by result", ["result"], registry=r)
        self.failures = Counter("modelport_failures", "Failed conversion attempts by stage", ["stage"], registry=r)
        self.last_success = Gauge("modelport_last_success_timestamp_seconds",
                                  "Unix time of the last published version", registry=r)
        self.global_step = Gauge("modelport_published_global_step", "global_step of the newest published version",
                                 registry=r)
        self.window = Gauge("modelport_published_window", "window of the newest published version", registry=r)
        self.duration = Histogram("modelport_conversion_duration_seconds", "Time to build, verify and publish a version",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.bytes_written = Counter("modelport_bytes_written", "Bytes of published files", registry=r)
        self.verify_cosine = Gauge("modelport_verification_min_cosine",
                                   "Lowest per-position logit cosine of the newest version's verification",
                                   ["artifact"], registry=r)
        self.verify_max_diff = Gauge("modelport_verification_max_abs_diff",
                                     "Largest logit difference in the newest version's verification", ["artifact"],
                                     registry=r)
        self.verify_kld = Gauge("modelport_verification_kld_mean",
                                "Mean KL divergence over the --corpus in the newest version's verification", ["artifact"],
                                registry=r)
        self.verify_same_top1 = Gauge("modelport_verification_same_top1",
                                      "Share of corpus positions whose top token is the source's, newest version",
                                      ["artifact"], registry=r)
        for result in ("published", "failed", "abandoned"):
            self.conversions.labels(result)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


class EventLog:
    """One JSON object per line, appended and flushed per event so `tail -f` and crashes both see it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
