"""Config, tokenizer and generation config: found beside the weights or in `--base-model`, and written
beside a converted model.

Training checkpoints rarely carry their config; the base model they were fine-tuned from does.
Files beside the checkpoint win over the base model's, so a run that changed its tokenizer keeps it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..architectures.registry import canonical_config
from ..core.bundle import TOKENIZER_FILES, ModelBundle
from ..core.config_check import check_config
from ..core.errors import CorruptInputError, ModelFileNotFoundError, UsageError


@dataclass
class Companions:
    config: dict
    config_path: Path
    tokenizer_files: dict[str, Path] = field(default_factory=dict)
    generation_config: dict | None = None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptInputError(f"not valid JSON ({exc})", path) from exc
    except RecursionError:
        raise CorruptInputError("not valid JSON (nested too deeply)", path) from None
    except OSError as exc:
        raise CorruptInputError(f"cannot read: {exc.strerror or exc}", path) from exc
    if not isinstance(data, dict):
        raise CorruptInputError("expected a JSON object", path)
    return data


def search_dirs(weights: Path, base_model: Path | None) -> list[Path]:
    here = weights if weights.is_dir() else weights.parent
    dirs = [here]
    if base_model is not None:
        if not base_model.is_dir():
            raise UsageError("--base-model must be a folder holding config.json (and a tokenizer)", base_model)
        dirs.append(base_model)
    return dirs


def find_companions(weights: Path, base_model: Path | None) -> Companions:
    dirs = search_dirs(weights, base_model)
    config_path = next((d / "config.json" for d in dirs if (d / "config.json").is_file()), None)
    if config_path is None:
        hint = "" if base_model else "; pass --base-model DIR with the model's config.json"
        raise ModelFileNotFoundError(f"no config.json beside it{hint}", weights)
    tokenizer: dict[str, Path] = {}
    tokenizer_dir = next((d for d in dirs if any((d / n).is_file() for n in TOKENIZER_FILES)), None)
    if tokenizer_dir is not None:
        tokenizer = {n: tokenizer_dir / n for n in TOKENIZER_FILES if (tokenizer_dir / n).is_file()}
    generation = next((d / "generation_config.json" for d in dirs
                       if (d / "generation_config.json").is_file()), None)
    config = read_json(config_path)
    check_config(config, config_path)
    config = canonical_config(config)       # a released config's other spelling, as the family's spec reads it
    return Companions(
        config=config,
        config_path=config_path,
        tokenizer_files=tokenizer,
        generation_config=read_json(generation) if generation else None,
    )


def written_config(config: dict, dtype: str) -> dict:
    """The source config with the dtype recorded in whichever key(s) it used (both if neither)."""
    out = dict(config)
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype", "torch_dtype"]
    for key in keys:
        out[key] = dtype
    return out


def write_companions(bundle: ModelBundle, out: Path, config: dict) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if bundle.generation_config is not None:
        (out / "generation_config.json").write_text(json.dumps(bundle.generation_config, indent=2) + "\n")
    for name, src in bundle.tokenizer_files.items():
        shutil.copyfile(src, out / name)
