"""Shared benchmark helpers: run a command and measure its wall time and peak RSS (children only)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modelport.core.torch_arrays import to_numpy
from modelport.formats.hf.safetensors_io import PlannedTensor, SafetensorsStreamWriter

MODELPORT = [sys.executable, "-m", "modelport.cli"]


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    stdout: str
    fastest: float = 0.0
    cpu_seconds: float = 0.0        # user + system: what a shared, oversubscribed machine does not inflate
    peak_anon_mb: float = 0.0       # largest anonymous RSS seen (sampled): RSS without mapped files' pages
    peak_file_mb: float = 0.0       # largest file-backed RSS seen (sampled): mapped model files, libraries


def _rss_of_child(time_pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) in KiB of the command GNU time runs, (0, 0) before it starts or once it ends."""
    try:
        child = Path(f"/proc/{time_pid}/task/{time_pid}/children").read_text().split()
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{child[0]}/status").read_text().splitlines())
        return int(fields["RssAnon"].split()[0]), int(fields["RssFile"].split()[0])
    except (OSError, IndexError, KeyError, ValueError):
        return 0, 0


def measure(cmd: list[str], env: dict | None = None, allow_failure: bool = False) -> Measure:
    """Wall time and peak RSS of `cmd` itself, measured by GNU time: a child forked from this
    (torch-importing) process would otherwise report our RSS, since ru_maxrss survives exec. GNU time's
    peak counts the pages of mapped files (a GGUF llama.cpp maps) with the process's own memory, so the
    anonymous and file-backed parts are also sampled from /proc every 50 ms."""
    with tempfile.NamedTemporaryFile("r") as rss, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%U %S %M", "-o", rss.name, *cmd], stdout=out,
                                stderr=subprocess.DEVNULL, env=env)
        anon = file = 0
        while proc.poll() is None:
            a, f = _rss_of_child(proc.pid)
            anon, file = max(anon, a), max(file, f)
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if proc.returncode != 0 and not (allow_failure and proc.returncode == 1):
            raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
        user, system, peak_kb = rss.read().split()[-3:]
        out.seek(0)
        stdout = out.read().decode()
    return Measure(seconds, int(peak_kb) / 1024, stdout, cpu_seconds=float(user) + float(system),
                   peak_anon_mb=anon / 1024, peak_file_mb=file / 1024)


@dataclass
class Contender:
    cmd: list[str]
    cleanup: Path | None = None
    env: dict | None = None


def interleaved(n: int, contenders: dict[str, Contender], settle: float = 3.0) -> dict[str, Measure]:
    """Median (and fastest) wall time and largest peak RSS of each contender over `n` rounds, one run
    of each per round: this machine's disk and memory speed drift 2-5x over minutes, and running the
    contenders side by side lets every one of them meet the same drift. Before each run the previous
    output is removed, the disk synced and the machine left idle for `settle` seconds: memory freed a
    moment ago is fast to reuse here and memory the host has taken back is slow (touching 2.2 GB of
    it: 0.16 s or 5.1 s), so without the pause a run's speed depends on what ran just before it."""
    runs: dict[str, list[Measure]] = {label: [] for label in contenders}
    for _ in range(n):
        for label, c in contenders.items():
            if c.cleanup is not None:
                remove(c.cleanup)
            os.sync()   # untimed: no run pays for the writeback of the one before it
            time.sleep(settle)
            runs[label].append(measure(c.cmd, c.env))
    for c in contenders.values():
        if c.cleanup is not None:
            remove(c.cleanup)
    return {label: Measure(statistics.median(r.seconds for r in rs), max(r.peak_rss_mb for r in rs), rs[-1].stdout,
                           min(r.seconds for r in rs), statistics.median(r.cpu_seconds for r in rs))
            for label, rs in runs.items()}


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def warm(path: Path) -> None:
    """Read every file once so that every contender starts from the page cache."""
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def llama_config(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16"}


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes, in model order, as transformers itself defines them for the config."""
    from modelport.architectures import spec_for
    from modelport.architectures.expected import expected_tensors
    return dict(expected_tensors(spec_for(config), config).shapes)


def random_tensor(shape: tuple[int, ...], dtype: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return to_numpy(torch.ones(shape, dtype=getattr(torch, dtype)))
    return to_numpy((torch.randn(shape, generator=g) * 0.02).to(getattr(torch, dtype)))


def write_hf_model(out: Path, config: dict, shard_bytes: int, dtype: str = "bfloat16") -> None:
    """A sharded HF folder written tensor by tensor (the generator itself stays small)."""
    out.mkdir(parents=True, exist_ok=True)
    shapes = llama_shapes(config)
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for name, shape in shapes.items():
        planned = PlannedTensor(name, shape, dtype)
        if shards[-1] and size + planned.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(planned)
        size += planned.nbytes
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for seed, (file, shard) in enumerate(zip(names, shards)):
        with SafetensorsStreamWriter(out / file, shard) as w:
            for j, p in enumerate(shard):
                w.write(p.name, random_tensor(p.shape, dtype, seed * 1000 + j))
    index = {"metadata": {"total_size": sum(p.nbytes for s in shards for p in s)},
             "weight_map": {p.name: f for f, s in zip(names, shards) for p in s}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text(json.dumps(config))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
