"""Editable copies of a bundle's tokenizer files, and their tokenizer_config.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..core.bundle import ModelBundle


def copy_into(bundle: ModelBundle, workdir: Path) -> None:
    """Point the bundle at copies in `workdir` (writers and the GGUF vocabulary read them from there)."""
    folder = workdir / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in bundle.tokenizer_files.items():
        shutil.copyfile(path, folder / name)
    bundle.tokenizer_files = {name: folder / name for name in bundle.tokenizer_files}
    if "tokenizer_config.json" not in bundle.tokenizer_files and bundle.tokenizer_files:
        (folder / "tokenizer_config.json").write_text("{}\n", encoding="utf-8")
        bundle.tokenizer_files["tokenizer_config.json"] = folder / "tokenizer_config.json"


def read_config(bundle: ModelBundle) -> dict:
    path = bundle.tokenizer_files.get("tokenizer_config.json")
    return json.loads(path.read_text(encoding="utf-8")) if path else {}


def write_config(bundle: ModelBundle, config: dict) -> None:
    bundle.tokenizer_files["tokenizer_config.json"].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                               encoding="utf-8")
