"""Version names for published checkpoints: `{version}-alpha+{global_step}` (semver with build metadata).

Semver ignores build metadata when ordering, so `0.2.84-alpha+1000` and `0.2.84-alpha+2500` would
tie; the step breaks the tie, numerically, so the newest step of a version sorts last.
"""
from __future__ import annotations

import semver

from ..core.errors import UsageError


def check_version(version: str) -> str:
    if not semver.Version.is_valid(version) or "+" in version or "-" in version:
        raise UsageError(f"--version {version!r}: expected a plain X.Y.Z version (the step is added as build metadata)")
    return version


def version_name(version: str, step: int) -> str:
    return f"{version}-alpha+{step}"


def parse(name: str) -> semver.Version | None:
    """The version a folder name carries, or None when it is not a published version's name."""
    try:
        parsed = semver.Version.parse(name)
    except ValueError:
        return None
    return parsed if parsed.build and parsed.build.isdigit() else None


def sort_key(name: str) -> tuple[semver.Version, int]:
    parsed = parse(name)
    if parsed is None:
        raise ValueError(f"not a version name: {name}")
    return parsed.replace(build=None), int(parsed.build)


def newest_first(names: list[str]) -> list[str]:
    return sorted((n for n in names if parse(n) is not None), key=sort_key, reverse=True)
