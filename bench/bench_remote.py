"""Issue 24 benchmark: a model in an S3-compatible server, converted by range vs downloaded first, and
an upload of a release against s3fs.put alone.

The server is moto's (tests/s3_server.py) on 127.0.0.1, the model bench_gguf.py's 0.5B llama (1.05 GB
bf16), made first when it is missing. (a) `modelport convert s3://.../model/ out.gguf --quant f16`;
(b) `s3fs.get` of the folder, then the same conversion of the local copy. Wall time and peak RSS of
each modelport process (GNU time), peak local disk under the output and cache folders (sampled every
10 ms), outputs compared byte for byte. Then the f16 GGUF is uploaded by modelport's put_file (a
multipart upload, then the object read back and its sha256 checked) and by s3fs.put_file alone.
Run: `.venv/bin/python bench/bench_remote.py [--layers 9]`.
"""
from __future__ import annotations

import argparse
import os
import shutil
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
    args = parser.parse_args()
    model = make_model(args.layers)
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
        with tempfile.TemporaryDirectory(dir=model.parent) as work:
            work = Path(work)
            cache, out_a, out_b, copy = work / "cache", work / "a", work / "b", work / "copy"
            for folder in (cache, out_a, out_b):
                folder.mkdir()
            run_env = {**env, "MODELPORT_CACHE_DIR": str(cache)}
            with DiskPeak(cache, out_a) as disk_a:
                a = measure([*MODELPORT, "convert", "s3://bench/model/", str(out_a / "model.gguf"), "--quant", "f16"],
                            run_env)
            started = time.perf_counter()
            with DiskPeak(copy, out_b) as disk_b:
                fs.get("bench/model", str(copy / "model"), recursive=True)
                download = time.perf_counter() - started
                b = measure([*MODELPORT, "convert", str(copy / "model"), str(out_b / "model.gguf"), "--quant", "f16"],
                            run_env)
            b_total = download + b.seconds
            output = (out_a / "model.gguf").stat().st_size
            same = (out_a / "model.gguf").read_bytes() == (out_b / "model.gguf").read_bytes()
            print(f"{'':44} {'wall s':>7} {'peak RSS MB':>11} {'peak disk GB':>12}")
            print(f"{'(a) convert s3://.../model/ --quant f16':44} {a.seconds:7.1f} {a.peak_rss_mb:11.0f} "
                  f"{disk_a.peak / 1e9:12.3f}")
            print(f"{'(b) s3fs.get, then convert the local copy':44} {b_total:7.1f} {b.peak_rss_mb:11.0f} "
                  f"{disk_b.peak / 1e9:12.3f}   (download {download:.1f} s + convert {b.seconds:.1f} s)")
            print(f"(a)/(b) time {a.seconds / b_total:.2f}; (a) peak disk - output = "
                  f"{(disk_a.peak - output) / weights * 100:.2f} % of the model; RSS (a) - local convert = "
                  f"{a.peak_rss_mb - b.peak_rss_mb:+.0f} MB; outputs byte-identical: {same}")

            from modelport.storage import parse
            from modelport.storage.upload import put_file
            gguf = out_a / "model.gguf"
            started = time.perf_counter()
            fs.put_file(str(gguf), "bench/plain/model.gguf")
            plain = time.perf_counter() - started
            started = time.perf_counter()
            put_file(gguf, parse("s3://bench/release/model.gguf"))
            checked = time.perf_counter() - started
            print(f"upload of {output / 1e9:.2f} GB: s3fs.put_file {plain:.1f} s ({output / plain / 1e6:.0f} MB/s); "
                  f"modelport put_file (multipart + read-back sha256) {checked:.1f} s "
                  f"({output / checked / 1e6:.0f} MB/s, {plain / checked * 100:.0f} % of s3fs.put_file)")
            shutil.rmtree(copy, ignore_errors=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
