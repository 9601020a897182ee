"""The watch service's settings: one pydantic model filled from a YAML file, then from flags.

Unknown YAML keys are errors (a typo must not silently change a long-running service).
Relative paths in the YAML are taken from the YAML's folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..storage import is_url

from ..core.settings_file import read_mapping, validated
from .versioning import check_version

DEFAULT_VERSION = "0.1.0"


class WatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_dir: Path | str               # a folder, or a URL (str) listed for checkpoints
    output: Path | str                       # a folder, or an s3:// / gs:// URL (str)
    to: Literal["hf", "gguf"] = "gguf"
    quant: list[str] = Field(default_factory=lambda: ["f16"])
    base_model: Path | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    interval: float = Field(600.0, gt=0)
    settle: float = Field(10.0, ge=0)        # seconds a checkpoint must stay unchanged before it is read
    ready_marker: str | None = None          # a checkpoint is complete once an object of this name is in it
    keep: int = Field(1, ge=1)
    version: str = DEFAULT_VERSION
    verify: bool = True
    corpus: str | None = None                # score each artifact over this text (a file, or "builtin")
    ctx: int = Field(512, ge=4, le=16384)    # tokens per scored chunk (verify.corpus.MAX_CTX)
    tokens: int = Field(32768, ge=4)         # corpus tokens scored at most
    allow_unused: bool = False               # drop source tensors no target takes (else the checkpoint fails)
    adapters_only: bool = False              # LoRA checkpoints as GGUF LoRAs beside one base GGUF (else merged)
    max_attempts: int = Field(3, ge=1)       # per checkpoint (and per rewrite of it)
    backoff: float = Field(60.0, ge=0)       # seconds before the 2nd attempt; doubles after each failure
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    registry: Path | None = None
    event_log: Path | None = None            # default OUTPUT/events.jsonl
    once: bool = False
    threads: int | None = None
    executor: Literal["local", "ray"] = "local"    # ray: each version built and published by a Ray task
    address: str | None = None               # the Ray cluster to join (default: a local Ray)
    resources: dict[str, float] = Field(default_factory=dict)   # Ray custom resources the task asks for
    imatrix: Path | None = None              # GGUF types made with this llama.cpp importance matrix
    imatrix_corpus: str | None = None        # or with one computed over this text (a file, or "builtin"), once per version
    imatrix_ctx: int | None = None
    imatrix_tokens: int | None = None

    @field_validator("checkpoint_dir", "output", mode="before")
    @classmethod
    def _path_or_url(cls, value: object) -> object:
        """A URL stays a string (a Path would fold its `//`); anything else is a path."""
        if isinstance(value, str) and is_url(value):
            from ..storage import parse
            location = parse(value)
            return location.local if location.local is not None else location.url
        return Path(value) if isinstance(value, str) else value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        return check_version(value)

    @field_validator("quant")
    @classmethod
    def _quants(cls, value: list[str]) -> list[str]:
        from ..formats.gguf.quant_types import file_type
        for quant in value:
            file_type(quant)
        return [q.lower() for q in value]

    @field_validator("corpus", "imatrix_corpus")
    @classmethod
    def _corpus(cls, value: str | None) -> str | None:
        if value is not None and value != "builtin" and not Path(value).expanduser().is_file():
            raise ValueError(f"{value}: no such file (a text file, or 'builtin')")
        return value

    @model_validator(mode="after")
    def _one_imatrix(self) -> "WatchConfig":
        if self.imatrix and self.imatrix_corpus:
            raise ValueError("give imatrix or imatrix_corpus, not both")
        return self

    @property
    def corpus_settings(self):
        """The scored corpus as verify takes it, or None."""
        from ..verify.corpus import CorpusSettings
        return CorpusSettings(self.corpus, self.ctx, self.tokens) if self.corpus else None

    @property
    def imatrix_settings(self) -> dict:
        """The importance-matrix options convert takes, for each GGUF of a version."""
        return {"imatrix": self.imatrix, "imatrix_corpus": self.imatrix_corpus, "imatrix_ctx": self.imatrix_ctx,
                "imatrix_tokens": self.imatrix_tokens}

    @property
    def quants(self) -> list[str]:
        return self.quant if self.to == "gguf" else []

    @property
    def events_path(self) -> Path | None:
        if self.event_log or isinstance(self.output, str):
            return self.event_log               # releases at a URL: events only where --event-log says
        return self.output / "events.jsonl"


PATH_KEYS = ("checkpoint_dir", "output", "base_model", "registry", "event_log", "imatrix")


def load(yaml_path: Path | None, overrides: dict) -> WatchConfig:
    """Settings from `yaml_path` (if any) with every non-None entry of `overrides` on top."""
    data: dict = {}
    if yaml_path is not None:
        data = read_mapping(yaml_path, "of watch settings")
        data = data.get("watch", data)
        for key in PATH_KEYS:
            if data.get(key) is not None and not is_url(str(data[key])) \
                    and not Path(data[key]).expanduser().is_absolute():
                data[key] = yaml_path.parent / Path(data[key]).expanduser()
        for key in ("corpus", "imatrix_corpus"):
            corpus = data.get(key)
            if isinstance(corpus, str) and corpus != "builtin" and not Path(corpus).expanduser().is_absolute():
                data[key] = str(yaml_path.parent / Path(corpus).expanduser())
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validated(WatchConfig, data, yaml_path)
