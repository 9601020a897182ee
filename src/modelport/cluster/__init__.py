"""Running modelport's work on a Ray cluster whose nodes share no disk with the driver: joining it
(token auth is Ray's, from RAY_AUTH_MODE/RAY_AUTH_TOKEN), refusing what no node can run, submitting
tasks with their resources and retries, and cancelling them on Ctrl-C. `batch` and `watch` both use
it; neither knows Ray's calls."""
from __future__ import annotations

from .remote import Cluster, Failure, mark_output_free, node_id, output_was_free, require_url

__all__ = ["Cluster", "Failure", "mark_output_free", "node_id", "output_was_free", "require_url"]
