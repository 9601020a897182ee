"""`batch --executor ray` on a local Ray instance: several jobs, one failing, one whose worker is killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import hf_logits, run_cli

pytest.importorskip("ray")


def _kill_writer(folder: Path, name: str, deadline: float) -> int | None:
    """SIGKILL the process writing `name` in `folder` (its temporary's name carries its pid)."""
    while time.time() < deadline:
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.startswith(f".{name}.modelport-tmp-"):
                    pid = int(entry.name.split(".modelport-tmp-")[1].split("-")[0])
                    os.kill(pid, signal.SIGKILL)
                    return pid
        time.sleep(0.01)
    return None


@pytest.mark.slow      # a Ray cluster and a killed worker: about a minute on 2 cores
def test_ray_executor_retries_a_lost_worker_and_reports_failures(samples, tmp_path):
    from modelport.samples import save_model
    big = tmp_path / "big"
    save_model(big, "llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=8,
               num_key_value_heads=4)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "step_3.pth").write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    config = tmp_path / "jobs.yaml"
    config.write_text(json.dumps({"jobs": [
        {"experiment_name": "tiny", "convert": {"checkpoint_path": str(samples("llama").path), "output_dir": str(out / "a")}},
        {"experiment_name": "broken", "convert": {"checkpoint_path": str(tmp_path / "broken" / "step_3.pth"),
                                                  "base_model": str(samples("llama").path), "output_dir": str(out / "b")}},
        {"experiment_name": "killed", "convert": {"checkpoint_path": str(big), "output_dir": str(out / "c"),
                                                  "final_format": "gguf", "quant": "q4_k_m"}},
        {"experiment_name": "gpt2", "convert": {"checkpoint_path": str(samples("gpt2").path), "output_dir": str(out / "d"),
                                                "final_format": "gguf", "quant": "f16"}},
    ]}))
    proc = subprocess.Popen([sys.executable, "-m", "modelport.cli", "batch", str(config), "--executor", "ray",
                             "--workers", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_writer(out / "c", "big", time.time() + 240)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "never saw the job writing"
    assert proc.returncode == 1, stderr                   # one job failed
    summary = json.loads(stdout)
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["executor"]) == (4, 3, 1, "ray")
    by_job = {r["job"]: r for r in summary["results"]}
    assert not by_job["broken"]["ok"] and "step_3.pth" in by_job["broken"]["error"]
    assert all(by_job[j]["ok"] for j in ("tiny", "killed", "gpt2"))
    assert "[4/4]" in stderr                               # progress streamed back as jobs finished

    # Every output is whole or absent; the killed attempt's temporary is gone.
    assert torch.equal(hf_logits(out / "a" / samples("llama").path.name), samples("llama").logits())
    import gguf
    for path in (out / "c" / "big", out / "d" / samples("gpt2").path.name):
        reader = gguf.GGUFReader(path)
        assert reader.tensors and reader.fields["general.architecture"].contents() in ("llama", "gpt2")
    assert not (out / "b").exists() or not any((out / "b").iterdir())
    for folder in (out / "a", out / "c", out / "d"):
        assert not [p for p in folder.iterdir() if ".modelport-tmp-" in p.name]

    rows = [r for r in run_cli("history", "--command", "batch", "--json").json()["attempts"]
            if r["destination"] and r["destination"].startswith(str(out))]
    statuses = sorted((Path(r["destination"]).parent.name, r["status"]) for r in rows)
    # The driver writes the rows from the results (one per job): the retried job's attempts are Ray's.
    assert statuses == [("a", "published"), ("b", "failed"), ("c", "published"), ("d", "published")]
