"""Fixtures: tiny random-weight models with a locally trained tokenizer, and a CLI runner."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from modelport.architectures import spec_for
from modelport.samples import save_model

IDS = torch.tensor([[0, 5, 17, 42, 99, 7, 250, 3, 11]])


@dataclass
class Sample:
    path: Path
    model: torch.nn.Module

    def logits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model(IDS).logits


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Each run starts with an empty modelport cache and registry (the CLI subprocesses inherit them)."""
    import os
    os.environ["MODELPORT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["MODELPORT_REGISTRY"] = str(tmp_path_factory.mktemp("registry") / "registry.sqlite")


def _sample(tmp_path_factory, family: str) -> Sample:
    path = tmp_path_factory.mktemp(family) / "model"
    model, _ = save_model(path, family)
    return Sample(path, model)


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """make(name) -> Sample; names are families, "llama-spm" for a SentencePiece tokenizer,
    "llama-bfb" for a byte-fallback BPE tokenizer.json without tokenizer.model, "llama-quant" for a
    model wide enough (rows of 256) that K-quant blocks apply, or a family's variant ("nemotron_h-moe":
    the family's tiny config with the variant's changes)."""
    made: dict[str, Sample] = {}

    def make(name: str) -> Sample:
        if name not in made:
            family, _, variant = name.partition("-")
            overrides = {}
            if variant == "quant":
                overrides = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                                 num_attention_heads=4, num_key_value_heads=2)
            elif variant in {v.name for v in spec_for({"model_type": family}).variants}:
                overrides = spec_for({"model_type": family}).variant(variant).tiny
            path = tmp_path_factory.mktemp(name) / "model"
            tokenizer = {"spm": "spm", "bfb": "bpe-fallback"}.get(variant)
            model, _ = save_model(path, family, tokenizer=tokenizer, **overrides)
            made[name] = Sample(path, model)
        return made[name]
    return make


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> Sample:
    return _sample(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory) -> Sample:
    return _sample(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def qwen2(tmp_path_factory) -> Sample:
    return _sample(tmp_path_factory, "qwen2")


def pt_checkpoint(sample: Sample, path: Path, **entries) -> Path:
    """A training run's single-file checkpoint at `path`, as a trainer leaves it: torch.save of the sample's
    state dict under `model_state_dict` beside `entries` (counters such as global_step), and the sample's
    config and tokenizer files in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": sample.model.state_dict(), **entries}, path)
    for p in sample.path.iterdir():
        if p.is_file() and p.suffix != ".safetensors":
            (path.parent / p.name).write_bytes(p.read_bytes())
    return path


def hf_logits(path: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(IDS).logits


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: object, preexec_fn=None, cwd: Path | None = None, env: dict | None = None,
            subprocess_only: bool = False) -> Run:
    """The CLI. In this process (imports paid once: a fresh process spends ~2 s importing torch) unless
    the call needs a process of its own: a preexec_fn, another cwd or environment, or `subprocess_only`
    (signals, a kill, plugins that would stay registered)."""
    if preexec_fn is None and cwd is None and env is None and not subprocess_only:
        return _in_process(*args)
    import os
    proc = subprocess.run([sys.executable, "-m", "modelport.cli", *map(str, args)], capture_output=True,
                          text=True, preexec_fn=preexec_fn, cwd=cwd, timeout=600,
                          env={**os.environ, **env} if env else None)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _in_process(*args: object) -> Run:
    import contextlib
    import io

    from modelport.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings a failed conversion must not leave behind."""
    return [p.name for p in folder.iterdir() if ".modelport-tmp-" in p.name]
