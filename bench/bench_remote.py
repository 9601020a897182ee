"""Issue 24 benchmark: a model in an S3-compatible server, converted by range vs downloaded first, and
an upload of a release against s3fs.put alone.

The server is moto's (tests/s3_server.py) on 127.0.0.1, the model bench_gguf.py's 0.5B llama (1.05 GB
bf16), made first when it is missing. (a) `modelport convert s3://.../model/ out.gguf --quant f16`;
(b) `s3fs.get` of the folder, then the same conversion of the local copy. Wall time and peak RSS of
each modelport process (GNU time), peak local disk under the output and cache folders (sampled every
10 ms), outputs compared byte for byte. Then the f16 GGUF is uploaded by modelport's put_file (a
multipart upload, then the object read back and its sha256 checked) and by s3fs.put_file alone.
moto's GET copies the whole object for every request, ranged or not (moto/s3/models.py FakeKey.value),
so (a) pays the object's size per range request there; `--hub` runs the same comparison against
tests/fake_hub.py, whose ranged GET reads only the range from disk, as a real server does:
(a) `convert hf://org/model`, (b) HfFileSystem.get of the folder, then the local conversion.
Run: `.venv/bin/python bench/bench_remote.py [--layers 9] [--hub]`.
"""
from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--hub", action="store_true", help="against the fake Hub instead of moto")
    args = parser.parse_args()
    model = make_model(args.layers)
    if args.hub:
        return hub(model)
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
    fs.put(str(model), "bench/model", recursive=True, chunksize=2**31)     # one PUT per file
    print(f"model: {model.name}, {weights / 1e9:.2f} GB of safetensors, put into moto in "
          f"{time.perf_counter() - started:.1f} s")
    try:
        compare(model, "s3://bench/model/", lambda dst: fs.get("bench/model", str(dst), recursive=True), env)
        from modelport.storage import parse
        from modelport.storage.upload import put_file
        with tempfile.TemporaryDirectory(dir=model.parent) as work:
            gguf = Path(work) / "model.gguf"
            subprocess.run([*MODELPORT, "convert", str(model), str(gguf), "--quant", "f16"], check=True,
                           stderr=subprocess.DEVNULL)
            size = gguf.stat().st_size
            started = time.perf_counter()
            fs.put_file(str(gguf), "bench/plain/model.gguf")
            plain = time.perf_counter() - started
            started = time.perf_counter()
            put_file(gguf, parse("s3://bench/release/model.gguf"))
            checked = time.perf_counter() - started
            print(f"upload of {size / 1e9:.2f} GB: s3fs.put_file {plain:.1f} s ({size / plain / 1e6:.0f} MB/s); "
                  f"modelport put_file (multipart + read-back sha256) {checked:.1f} s "
                  f"({size / checked / 1e6:.0f} MB/s, {plain / checked * 100:.0f} % of s3fs.put_file)")
    finally:
        server.stop()


def compare(model: Path, source: str, fetch, env: dict) -> None:
    """(a) convert `source` by range; (b) `fetch(folder)` (a download), then convert the copy."""
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    with tempfile.TemporaryDirectory(dir=model.parent) as work:
        work = Path(work)
        cache, out_a, out_b, copy = work / "cache", work / "a", work / "b", work / "copy"
        for folder in (cache, out_a, out_b):
            folder.mkdir()
        run_env = {**env, "MODELPORT_CACHE_DIR": str(cache)}
        with DiskPeak(cache, out_a) as disk_a:
            a = measure([*MODELPORT, "convert", source, str(out_a / "model.gguf"), "--quant", "f16"], run_env)
        started = time.perf_counter()
        with DiskPeak(copy, out_b) as disk_b:
            fetch(copy / "model")
            download = time.perf_counter() - started
            b = measure([*MODELPORT, "convert", str(copy / "model"), str(out_b / "model.gguf"), "--quant", "f16"],
                        run_env)
        total = download + b.seconds
        output = (out_a / "model.gguf").stat().st_size
        same = (out_a / "model.gguf").read_bytes() == (out_b / "model.gguf").read_bytes()
        print(f"{'':44} {'wall s':>7} {'peak RSS MB':>11} {'peak disk GB':>12}")
        print(f"{'(a) convert ' + source[:30] + ' --quant f16':44} {a.seconds:7.1f} {a.peak_rss_mb:11.0f} "
              f"{disk_a.peak / 1e9:12.3f}")
        print(f"{'(b) download, then convert the local copy':44} {total:7.1f} {b.peak_rss_mb:11.0f} "
              f"{disk_b.peak / 1e9:12.3f}   (download {download:.1f} s + convert {b.seconds:.1f} s)")
        print(f"(a)/(b) time {a.seconds / total:.2f}; (a) peak disk - output = "
              f"{(disk_a.peak - output) / weights * 100:.2f} % of the model; RSS (a) - local convert = "
              f"{a.peak_rss_mb - b.peak_rss_mb:+.0f} MB; outputs byte-identical: {same}")


def hub(model: Path) -> None:
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
            compare(model, "hf://org/model", lambda dst: fs.get("org/model", str(dst), recursive=True), env)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
