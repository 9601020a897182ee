"""Models read from and written to S3 through a real S3 HTTP server (moto's, on 127.0.0.1): results
byte-identical to the local conversions, weights read by range (local disk: the output alone), pickles
staged and removed, transient faults retried, bad URLs and credentials refused in one line."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import pt_checkpoint, run_cli
from s3_server import ACCESS_KEY, SECRET_KEY, bucket, moto_server, s3  # noqa: F401  (fixtures)


def _blocks(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


class DiskWatch:
    """The peak of the bytes on disk under some folders, sampled while a block runs."""

    def __init__(self, *folders: Path) -> None:
        self.folders, self.peak, self._stop = folders, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_blocks(f) for f in self.folders))
            time.sleep(0.002)

    def __enter__(self) -> "DiskWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def sharded(llama, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "model"
    assert run_cli("convert", llama.path, out, "--max-shard-size", "200KB").code == 0
    assert len(list(out.glob("*.safetensors"))) > 1
    return out


def test_sharded_hf_from_s3_is_byte_identical_and_reads_by_range(s3, sharded, tmp_path):
    client, proxy = s3
    b = bucket(client)
    client.put(str(sharded), f"{b}/run/model", recursive=True)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", sharded, local, "--quant", "f16").code == 0
    out = tmp_path / "out" / "remote.gguf"
    out.parent.mkdir()
    before = proxy.requests
    with DiskWatch(out.parent, tmp_path / "cache") as disk:
        run = run_cli("convert", f"s3://{b}/run/model/", out, "--quant", "f16", "--json")
    assert run.code == 0, run.stderr
    assert out.read_bytes() == local.read_bytes()
    assert run.json()["source"] == f"s3://{b}/run/model/"
    weights = sum(p.stat().st_size for p in sharded.glob("*.safetensors"))
    companions = sum(p.stat().st_blocks * 512 for p in sharded.iterdir() if p.suffix != ".safetensors")
    assert weights > 10 * companions              # else the figure below would say little
    # the output, the mirrored config and tokenizer, and less than 5 % of the weights: none is downloaded
    assert disk.peak <= out.stat().st_blocks * 512 + companions + 0.05 * weights, (disk.peak, out.stat().st_size)
    assert proxy.requests - before > len(list(sharded.glob("*.safetensors")))     # headers and tensors by range
    assert not any((tmp_path / "cache").rglob("*.safetensors"))                   # the mirror went with the run


def test_reads_ahead_in_file_order_within_a_bounded_window(s3, monkeypatch):
    """Two readers taking a file's blocks in turn (as the writer's threads do) are served by one GET
    streamed ahead of them; the bytes held never pass ahead + behind + a chunk + the reads waiting;
    a jump back past the window opens a second stream, a read just behind it goes by range."""
    from modelport.storage import parse, readahead
    from modelport.storage.sources import RemoteSource
    monkeypatch.setenv("MODELPORT_READ_AHEAD", "2")
    monkeypatch.setenv("MODELPORT_READ_BEHIND", "1")
    monkeypatch.setattr(readahead, "STREAM_CHUNK", 2**18)
    client, proxy = s3
    b = bucket(client)
    data = os.urandom(12 * 2**20)
    client.pipe_file(f"{b}/big.safetensors", data)
    where = parse(f"s3://{b}/big.safetensors")
    source = RemoteSource(where.fs, where.path, len(data), where.url)
    block, held, got = 2**19, [], {}
    bound = 2 * 2**20 + 2**20 + 2**18 + 2 * block
    in_turn = threading.Barrier(2)       # at most one round apart, as threads sharing a block queue
    opened = threading.Event()           # the stream starts at the file's first block, as a writer's does

    def reader(first: int) -> None:
        for start in range(first * block, len(data), 2 * block):
            if first:
                assert opened.wait(timeout=60)
            got[start] = source.read(start, block)
            opened.set()
            held.extend(sum(len(c) for c in s.chunks) for s in source._streams)
            in_turn.wait(timeout=60)
    gets = proxy.methods["GET"]
    threads = [threading.Thread(target=reader, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    joined = b"".join([got[k] for k in sorted(got)])
    assert joined == data
    requests = proxy.methods["GET"] - gets
    assert requests == 1
    peak = max(held)
    assert 0 < peak <= bound
    back = source.read(2**20, 1000)                                  # far behind: a second stream
    assert back == data[2**20:2**20 + 1000]
    assert len(source._streams) == 2
    requests = proxy.methods["GET"] - gets
    assert requests == 2
    behind = source.read(2**20 - 5000, 10)                           # just behind that one: by range
    assert behind == data[2**20 - 5000:2**20 - 4990]
    requests = proxy.methods["GET"] - gets
    assert requests == 3
    source.close()
    assert source._streams == []


def test_inspect_s3_reads_headers_only(s3, sharded):
    client, _ = s3
    b = bucket(client)
    client.put(str(sharded), f"{b}/m", recursive=True)
    run = run_cli("inspect", f"s3://{b}/m", "--json")
    assert run.code == 0, run.stderr
    local = run_cli("inspect", sharded, "--json").json()
    remote = run.json()
    assert remote["path"] == f"s3://{b}/m"
    for key in ("format", "architecture", "parameters", "dtypes", "tensors", "bytes", "tokenizer_files"):
        assert remote[key] == local[key]


@pytest.mark.slow
def test_gguf_to_gguf_from_s3(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    source = tmp_path / "model.gguf"
    assert run_cli("convert", llama.path, source, "--quant", "f32").code == 0
    client.put(str(source), f"{b}/releases/model.gguf")
    local = tmp_path / "local-q8.gguf"
    assert run_cli("convert", source, local, "--quant", "q8_0").code == 0
    remote = tmp_path / "remote-q8.gguf"
    run = run_cli("convert", f"s3://{b}/releases/model.gguf", remote, "--quant", "q8_0")
    assert run.code == 0, run.stderr
    assert remote.read_bytes() == local.read_bytes()


@pytest.mark.slow
def test_pth_is_staged_then_removed(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    ckpt = pt_checkpoint(llama, tmp_path / "ckpt" / "run.pth", global_step=7).parent
    client.put(str(ckpt), f"{b}/ckpt", recursive=True)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", ckpt / "run.pth", local).code == 0
    remote = tmp_path / "remote.gguf"
    run = run_cli("convert", f"s3://{b}/ckpt/run.pth", remote)
    assert run.code == 0, run.stderr
    assert remote.read_bytes() == local.read_bytes()
    assert not list((tmp_path / "cache" / "mirrors").iterdir())


def test_base_model_by_url(s3, llama, tmp_path):
    """A bare checkpoint's config and tokenizer from a bucket (`--base-model s3://...`): the same file as
    with the folder on disk, for convert, and the same answers for inspect and verify."""
    client, _ = s3
    b = bucket(client)
    torch.save(llama.model.state_dict(), tmp_path / "bare.pth")
    client.put(str(llama.path), f"{b}/base", recursive=True)
    url = f"s3://{b}/base"
    local, remote = tmp_path / "local.gguf", tmp_path / "remote.gguf"
    assert run_cli("convert", tmp_path / "bare.pth", local, "--base-model", llama.path).code == 0
    run = run_cli("convert", tmp_path / "bare.pth", remote, "--base-model", url)
    assert run.code == 0, run.stderr
    assert remote.read_bytes() == local.read_bytes()
    inspected = run_cli("inspect", tmp_path / "bare.pth", "--base-model", url, "--json")
    assert inspected.code == 0, inspected.stderr
    assert inspected.json()["architecture"] == "llama" and inspected.json()["tokenizer"]
    checked = run_cli("verify", tmp_path / "bare.pth", remote, "--base-model", url, "--json")
    assert checked.code == 0 and checked.json()["tokenization_agreement"] == 1.0, checked.stderr
    assert not list((tmp_path / "cache" / "mirrors").iterdir())


def test_dcp_by_url_is_staged_then_removed(s3, llama, tmp_path):
    """A DCP folder in a bucket (torch's reader opens its files itself): staged, converted, the staged
    copy gone; the same GGUF as from the folder on disk."""
    client, _ = s3
    b = bucket(client)
    dcp = tmp_path / "run" / "step_5"                 # the same name as in the bucket (the GGUF's general.name)
    assert run_cli("convert", llama.path, dcp, "--to", "dcp").code == 0
    client.put(str(dcp), f"{b}/run/step_5", recursive=True)
    local, remote = tmp_path / "local.gguf", tmp_path / "remote.gguf"
    assert run_cli("convert", dcp, local, "--base-model", llama.path).code == 0
    run = run_cli("convert", f"s3://{b}/run/step_5", remote, "--base-model", llama.path, "--json")
    assert run.code == 0, run.stderr
    assert run.json()["source_format"] == "dcp" and run.json()["source"] == f"s3://{b}/run/step_5"
    assert remote.read_bytes() == local.read_bytes()
    assert not list((tmp_path / "cache" / "mirrors").iterdir())


def test_convert_to_s3_is_byte_identical_and_checked(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", llama.path, local, "--quant", "q8_0").code == 0
    run = run_cli("convert", llama.path, f"s3://{b}/rel/model.gguf", "--quant", "q8_0", "--json")
    assert run.code == 0, run.stderr
    assert client.cat_file(f"{b}/rel/model.gguf") == local.read_bytes()
    import hashlib
    assert run.json()["uploaded"] == [{"url": f"s3://{b}/rel/model.gguf", "size": local.stat().st_size,
                                       "sha256": hashlib.sha256(local.read_bytes()).hexdigest()}]
    assert not list((tmp_path / "cache" / "uploads").iterdir())
    again = run_cli("convert", llama.path, f"s3://{b}/rel/model.gguf", "--quant", "q8_0")
    assert again.code == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("parts", [3, 1])
def test_upload_is_checked_by_the_stores_checksum_or_a_read_back(s3, tmp_path, monkeypatch, parts):
    """A multipart upload is checked by the SHA-256 the store computes over the parts it holds (no
    GET of the object); a one-part file by reading it back. A byte flipped on the way fails either,
    in one line naming the URL, and leaves no object."""
    import hashlib

    from modelport.core.errors import ModelConversionError
    from modelport.storage import parse, upload
    monkeypatch.setattr(upload, "MIN_PART", 5 * 2**20)         # S3's smallest part: three of them below
    client, proxy = s3
    b = bucket(client)
    data = os.urandom(11 * 2**20 if parts == 3 else 2**20)
    local = tmp_path / "model.gguf"
    local.write_bytes(data)
    gets = proxy.methods["GET"]
    done = upload.put_file(local, parse(f"s3://{b}/rel/model.gguf"))
    assert done.sha256 == hashlib.sha256(data).hexdigest() and done.size == len(data)
    assert client.cat_file(f"{b}/rel/model.gguf") == data
    assert (proxy.methods["GET"] - gets == 0) == (parts == 3)      # the read-back only where S3 keeps no checksum
    proxy.corrupt(1, "PUT")
    with pytest.raises(ModelConversionError) as failed:
        upload.put_file(local, parse(f"s3://{b}/rel/bad.gguf"))
    assert f"s3://{b}/rel/bad.gguf" in str(failed.value) and not proxy.corruptions
    assert not client.exists(f"{b}/rel/bad.gguf")


@pytest.mark.slow
def test_convert_hf_folder_to_s3(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    local = tmp_path / "local"
    assert run_cli("convert", llama.path, local, "--dtype", "float16").code == 0
    run = run_cli("convert", llama.path, f"s3://{b}/hf", "--dtype", "float16")
    assert run.code == 0, run.stderr
    for path in local.iterdir():
        assert client.cat_file(f"{b}/hf/{path.name}") == path.read_bytes(), path.name


def test_transient_faults_are_retried(s3, sharded, tmp_path, monkeypatch):
    from modelport.storage import sources
    monkeypatch.setattr(sources, "PART", 8192)        # headers read in many parallel ranged parts, tensors streamed
    client, proxy = s3
    b = bucket(client)
    client.put(str(sharded), f"{b}/model", recursive=True)     # the folder's name is the model's (general.name)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", sharded, local).code == 0
    proxy.fail(3, 503)
    proxy.fail(2, 500, "GET")
    proxy.drop(2, "GET")
    out = tmp_path / "out.gguf"
    run = run_cli("convert", f"s3://{b}/model", out)
    assert run.code == 0, run.stderr
    assert proxy.injected == 7 and not proxy.faults
    assert out.read_bytes() == local.read_bytes()


@pytest.mark.slow
def test_faults_past_the_budget_fail_in_one_line(s3, sharded, tmp_path, monkeypatch):
    client, proxy = s3
    b = bucket(client)
    client.put(str(sharded), f"{b}/m", recursive=True)
    monkeypatch.setenv("MODELPORT_RETRIES", "3")
    proxy.fail(1000, 503)
    out = tmp_path / "out.gguf"
    run = run_cli("convert", f"s3://{b}/m", out)
    proxy.clear()
    assert run.code == 1
    line, = run.stderr.strip().splitlines()
    assert f"s3://{b}/m" in line and "gave up after 3 attempts" in line
    assert not out.exists() and not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_failed_upload_leaves_nothing_under_the_final_key(s3, llama, tmp_path, monkeypatch):
    client, proxy = s3
    b = bucket(client)
    monkeypatch.setenv("MODELPORT_RETRIES", "2")
    proxy.fail(1000, 500, "PUT")
    run = run_cli("convert", llama.path, f"s3://{b}/rel/model.gguf")
    proxy.clear()
    assert run.code == 1
    assert client.find(b) == []


@pytest.mark.parametrize("case", ["no bucket", "no key", "bucketless", "unknown scheme", "no credentials",
                                  pytest.param("wrong endpoint", marks=pytest.mark.slow)])
def test_bad_urls_and_credentials_fail_in_one_line_without_secrets(s3, llama, tmp_path, monkeypatch, case):
    client, _ = s3
    b = bucket(client)
    src, code, words = {
        "no bucket": (f"s3://no-such-bucket-{os.getpid()}/m", 2, "no such"),
        "no key": (f"s3://{b}/missing/model", 2, "no such file"),
        "bucketless": ("s3://", 2, "needs a bucket"),
        "unknown scheme": ("ftp://host/model", 2, "unsupported URL scheme"),
        "no credentials": (f"s3://{b}/m", 2, "no credentials"),
        "wrong endpoint": (f"s3://{b}/m", 1, "gave up"),
    }[case]
    if case == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    if case == "wrong endpoint":
        from s3_server import free_port
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("MODELPORT_RETRIES", "2")
    for args in (("convert", src, tmp_path / "out.gguf"), ("inspect", src), ("convert", llama.path,
                                                                          f"{src}/out.gguf" if case != "bucketless" else src)):
        if case == "no key" and args[0] == "convert" and args[1] == llama.path:
            continue             # a new key under an existing bucket is a valid destination
        run = run_cli(*args)
        assert run.code == code, (args, run.stderr)
        line, = run.stderr.strip().splitlines()
        assert words in line, line
        assert SECRET_KEY not in run.stderr + run.stdout and ACCESS_KEY not in run.stderr + run.stdout
    assert not (tmp_path / "out.gguf").exists()


def test_inspect_says_where_the_step_came_from(llama, tmp_path):
    pt_checkpoint(llama, tmp_path / "model.pt", global_step=1234, current_window=56)
    info = run_cli("inspect", tmp_path / "model.pt", "--json").json()
    assert (info["step"], info["window"], info["step_from"]) == (1234, 56, "entry global_step")
    named = tmp_path / "checkpoint-77.pt"
    torch.save(llama.model.state_dict(), named)
    info = run_cli("inspect", named, "--json").json()
    assert (info["step"], info["step_from"]) == (77, "name")


@pytest.mark.slow
def test_verify_by_url_runs_the_staged_gguf(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    gguf_file = tmp_path / "model.gguf"
    assert run_cli("convert", llama.path, gguf_file, "--quant", "f32").code == 0
    client.put(str(gguf_file), f"{b}/rel/model.gguf")
    client.put(str(llama.path), f"{b}/model", recursive=True)
    run = run_cli("verify", f"s3://{b}/model", f"s3://{b}/rel/model.gguf", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["ok"] and run.json()["converted"] == f"s3://{b}/rel/model.gguf"
    assert not list((tmp_path / "cache" / "mirrors").iterdir())
