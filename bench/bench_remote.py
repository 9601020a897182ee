"""Issue 24 benchmark: a model in an S3-compatible server, converted by range vs downloaded first, and
an upload of a release against s3fs.put_file alone, side by side in rounds.

The server is moto's (tests/s3_server.py) on 127.0.0.1, the model bench_gguf.py's 0.5B llama (1.05 GB
bf16, one shard), made first when it is missing. Each round runs, one after the other:
(a) `modelport convert s3://.../model/ out.gguf --quant f16` (a stream per shard, read ahead in file
order); (b) `s3fs.get` of the folder with its defaults (10 ranged GETs at once per file), then the
same conversion of the local copy; (b1) the same with `max_concurrency=1` (one GET per file, the
fastest download against moto, whose every GET reads the whole object: moto/s3/models.py
FakeKey.value); wall time and peak RSS of each modelport process (GNU time), peak local disk under
the output and cache folders (sampled every 10 ms), outputs compared byte for byte. Then the f16
GGUF is uploaded by s3fs.put_file (defaults) and by modelport's put_file (multipart, parts carrying
SHA-256, the store's checksum checked), alternately, --rounds times. Medians are printed with every
round. `--hub` runs (a) and (b) against tests/fake_hub.py instead: (a) `convert hf://org/model`,
(b) HfFileSystem.get of the folder, then the local conversion.
Run: `.venv/bin/python bench/bench_remote.py [--layers 9] [--rounds 2] [--hub]`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_gguf import make_model
from common import MODELPORT, measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer  # noqa: E402


class DiskPeak:
    """The largest number of bytes on disk under some folders while a block runs."""

    def __init__(self, *folders: Path) -> None:
        self.folders, self.peak, self._stop = folders, 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for folder in self.folders:
                for root, _, files in os.walk(folder):
                    for name in files:
                        try:
                            total += os.stat(os.path.join(root, name)).st_blocks * 512
                        except FileNotFoundError:
                            pass
            self.peak = max(self.peak, total)
            time.sleep(0.01)

    def __enter__(self) -> "DiskPeak":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hub", action="store_true", help="against the fake Hub instead of moto")
    args = parser.parse_args()
    model = make_model(args.layers)
    if args.hub:
        return hub(model, args.rounds)
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    server = MotoServer()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": server.endpoint}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                           "AWS_ENDPOINT_URL")})
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir("bench")
    started = time.perf_counter()
    fs.put(str(model), "bench/model", recursive=True, chunksize=64 * 2**20)
    print(f"model: {model.name}, {weights / 1e9:.2f} GB of safetensors, put into moto in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    try:
        compare(model, "s3://bench/model/", {
            "(b) s3fs.get (defaults), then convert": lambda dst: fs.get("bench/model", str(dst), recursive=True),
            "(b1) s3fs.get, 1 GET per file, then convert": lambda dst: fs.get("bench/model", str(dst),
                                                                              recursive=True, max_concurrency=1)},
                env, args.rounds)
        upload(model, fs, args.rounds)
    finally:
        server.stop()


def upload(model: Path, fs, rounds: int) -> None:
    """s3fs.put_file vs modelport's checked put_file of the same f16 GGUF, alternately."""
    from modelport.storage import parse
    from modelport.storage.upload import put_file
    with tempfile.TemporaryDirectory(dir=model.parent) as work:
        gguf = Path(work) / "model.gguf"
        subprocess.run([*MODELPORT, "convert", str(model), str(gguf), "--quant", "f16"], check=True,
                       stderr=subprocess.DEVNULL)
        size = gguf.stat().st_size
        plain, checked = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            fs.put_file(str(gguf), "bench/plain/model.gguf")
            plain.append(time.perf_counter() - started)
            fs.rm("bench/plain/model.gguf")
            started = time.perf_counter()
            put_file(gguf, parse("s3://bench/release/model.gguf"))
            checked.append(time.perf_counter() - started)
            fs.rm("bench/release/model.gguf")
        p, c = statistics.median(plain), statistics.median(checked)
        print(f"upload of {size / 1e9:.2f} GB, median of {rounds}: s3fs.put_file {p:.1f} s ({size / p / 1e6:.0f} MB/s; "
              f"rounds {', '.join(f'{x:.1f}' for x in plain)}); modelport put_file (checked) {c:.1f} s "
              f"({size / c / 1e6:.0f} MB/s; rounds {', '.join(f'{x:.1f}' for x in checked)}): "
              f"{p / c * 100:.0f} % of s3fs.put_file's throughput", flush=True)


def compare(model: Path, source: str, downloads: dict, env: dict, rounds: int) -> None:
    """(a) convert `source` by range; then each download in `downloads` (label -> fetch(folder)) followed
    by the conversion of the copy; `rounds` times side by side, medians printed."""
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    rows: dict[str, list[tuple[float, float, int, str]]] = {}
    identical = True
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=model.parent) as work:
            work = Path(work)
            cache, out_a = work / "cache", work / "a"
            for folder in (cache, out_a):
                folder.mkdir()
            run_env = {**env, "MODELPORT_CACHE_DIR": str(cache)}
            with DiskPeak(cache, out_a) as disk_a:
                a = measure([*MODELPORT, "convert", source, str(out_a / "model.gguf"), "--quant", "f16"], run_env)
            output = (out_a / "model.gguf").stat().st_size
            label_a = f"(a) convert {source[:24]} --quant f16"
            rows.setdefault(label_a, []).append((a.seconds, a.peak_rss_mb, disk_a.peak, ""))
            for label, fetch in downloads.items():
                out_b, copy = work / "b", work / "copy"
                out_b.mkdir()
                started = time.perf_counter()
                with DiskPeak(copy, out_b) as disk_b:
                    fetch(copy / "model")
                    download = time.perf_counter() - started
                    b = measure([*MODELPORT, "convert", str(copy / "model"), str(out_b / "model.gguf"), "--quant",
                                 "f16"], run_env)
                rows.setdefault(label, []).append((download + b.seconds, b.peak_rss_mb, disk_b.peak,
                                                   f"download {download:.1f} + convert {b.seconds:.1f}"))
                identical &= (out_a / "model.gguf").read_bytes() == (out_b / "model.gguf").read_bytes()
                shutil.rmtree(copy)
                shutil.rmtree(out_b)
        print(f"round {_ + 1}: " + "; ".join(f"{k.split(')')[0]}) {v[-1][0]:.1f} s" for k, v in rows.items()),
              flush=True)
    median = {label: statistics.median(r[0] for r in runs) for label, runs in rows.items()}
    print(f"median of {rounds} rounds{'':27} {'wall s':>7} {'peak RSS MB':>11} {'peak disk GB':>12}   rounds")
    for label, runs in rows.items():
        print(f"{label:60} {median[label]:7.1f} {max(r[1] for r in runs):11.0f} {max(r[2] for r in runs) / 1e9:12.3f}"
              f"   {'; '.join(f'{r[0]:.1f}' + (f' ({r[3]})' if r[3] else '') for r in runs)}")
    a_label, *b_labels = rows
    a_rss = max(r[1] for r in rows[a_label])
    for label in b_labels:
        print(f"(a)/{label.split(' ')[0]} time {median[a_label] / median[label]:.2f}; RSS (a) - local convert = "
              f"{a_rss - max(r[1] for r in rows[label]):+.0f} MB")
    print(f"(a) peak disk - output = {(max(r[2] for r in rows[a_label]) - output) / weights * 100:.2f} % of the model; "
          f"outputs byte-identical: {identical}", flush=True)


def hub(model: Path, rounds: int) -> None:
    with tempfile.TemporaryDirectory(dir=model.parent) as root:
        (Path(root) / "org").mkdir()
        os.symlink(model, Path(root) / "org" / "model")
        fake = Path(__file__).resolve().parent.parent / "tests" / "fake_hub.py"
        proc = subprocess.Popen([sys.executable, str(fake), root, "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            endpoint = f"http://127.0.0.1:{int(proc.stdout.readline())}"
            env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
            from huggingface_hub import HfFileSystem
            fs = HfFileSystem(endpoint=endpoint, skip_instance_cache=True)
            print(f"model: {model.name}, {sum(p.stat().st_size for p in model.glob('*.safetensors')) / 1e9:.2f} GB "
                  f"of safetensors, served by tests/fake_hub.py (ranged GETs read the range alone)")
            compare(model, "hf://org/model", {"(b) HfFileSystem.get, then convert":
                                              lambda dst: fs.get("org/model", str(dst), recursive=True)}, env, rounds)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
