"""YAML settings files (batch jobs, watch settings, --add-tokens): read, checked by a pydantic model,
and every problem reported as one usage error naming the file and the key."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import UsageError

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: Path, what: str) -> dict:
    """The file's top-level mapping (an empty file is an empty one); `what` says what it should hold."""
    if not path.is_file():
        raise UsageError("no such file", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"not valid YAML: {str(exc).splitlines()[0]}", path) from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(f"expected a mapping {what}", path)
    return data


def validated(model: type[M], data: dict, path: Path | None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or model.__name__
        more = f" ({exc.error_count()} problems in all)" if exc.error_count() > 1 else ""
        raise UsageError(f"{where}: {first['msg']}{more}", path) from exc
