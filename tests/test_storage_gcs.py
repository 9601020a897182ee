"""Models read from and written to Google Cloud Storage through a GCS JSON-API server on 127.0.0.1
(gcp-storage-emulator, through gcsfs as with Google): results byte-identical to the local
conversions, weights read by range, uploads leaving nothing but the final object, bad URLs and
credentials refused in one line without a secret."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import pt_checkpoint, run_cli
from gcs_server import SECRET_TOKEN, bad_key, bucket, gcs, gcs_server  # noqa: F401  (fixtures)

pytest.importorskip("gcsfs")


@pytest.fixture(scope="module")
def sharded(llama, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "model"
    assert run_cli("convert", llama.path, out, "--max-shard-size", "200KB").code == 0
    assert len(list(out.glob("*.safetensors"))) > 1
    return out


def _span(header: str, size: int) -> int:
    """The bytes a `Range: bytes=FIRST-LAST` header asks of an object of `size` bytes."""
    first, last = header.split("=")[1].split("-")
    return min(int(last), size - 1) - int(first) + 1


def test_hf_folder_from_gs_is_byte_identical_and_read_by_range(gcs, sharded, tmp_path, monkeypatch):
    """The weights are read by range (here in 32 KB ranges, so each shard takes several), never as
    whole objects and never onto disk; only the small companions (config, tokenizer) come whole."""
    from modelport.storage import readahead, sources
    monkeypatch.setattr(sources, "PART", 2**15)
    monkeypatch.setattr(readahead, "RANGE_CHUNK", 2**15)
    client, server = gcs
    b = bucket(client)
    client.put(str(sharded), f"{b}/run/model", recursive=True)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", sharded, local, "--quant", "f16").code == 0
    out = tmp_path / "remote.gguf"
    before = len(server.ranges)
    run = run_cli("convert", f"gs://{b}/run/model/", out, "--quant", "f16", "--json")
    assert run.code == 0, run.stderr
    assert out.read_bytes() == local.read_bytes()
    assert run.json()["source"] == f"gs://{b}/run/model/"
    ranges = server.ranges[before:]
    shards = sorted(p.stat().st_size for p in sharded.glob("*.safetensors"))
    companions = [p for p in sharded.iterdir() if p.suffix != ".safetensors"]
    ranged = [r for r in ranges if r]
    assert len(ranges) - len(ranged) <= len(companions), ranges              # whole GETs: companions only
    assert len(ranged) > 4 * len(shards) and max(_span(r, shards[-1]) for r in ranged) < shards[0], ranges
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_inspect_gs_matches_local(gcs, sharded):
    client, _ = gcs
    b = bucket(client)
    client.put(str(sharded), f"{b}/m", recursive=True)
    run = run_cli("inspect", f"gs://{b}/m", "--json")
    assert run.code == 0, run.stderr
    local, remote = run_cli("inspect", sharded, "--json").json(), run.json()
    assert remote["path"] == f"gs://{b}/m"
    for key in ("format", "architecture", "parameters", "dtypes", "tensors", "bytes", "tokenizer_files"):
        assert remote[key] == local[key]


def test_gguf_from_gs_is_read_by_range(gcs, llama, tmp_path, monkeypatch):
    """A GGUF in a bucket: inspect reads its header by range, never the whole object (the first read
    of a header scan made 4 KB, as the 1 MB default would cover this whole small file)."""
    from modelport.storage import sources
    monkeypatch.setattr(sources, "SCAN_BLOCK", 4096)
    client, server = gcs
    b = bucket(client)
    source = tmp_path / "model.gguf"
    assert run_cli("convert", llama.path, source, "--quant", "f32").code == 0
    client.put(str(source), f"{b}/rel/model.gguf")
    before = len(server.ranges)
    run = run_cli("inspect", f"gs://{b}/rel/model.gguf", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["format"] == run_cli("inspect", source, "--json").json()["format"] == "gguf"
    ranges = server.ranges[before:]
    assert ranges and all(ranges), ranges
    fetched = sum(_span(r, source.stat().st_size) for r in ranges)
    assert fetched < source.stat().st_size / 2, (fetched, source.stat().st_size)


def test_convert_to_gs_is_byte_identical_and_leaves_only_the_object(gcs, llama, tmp_path):
    """Converted to gs://: the object equals the local conversion, the JSON names its sha256, nothing
    else is left in the bucket (no temporary or partial object), and a second run refuses to overwrite."""
    client, _ = gcs
    b = bucket(client)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", llama.path, local, "--quant", "q8_0").code == 0
    run = run_cli("convert", llama.path, f"gs://{b}/rel/model.gguf", "--quant", "q8_0", "--json")
    assert run.code == 0, run.stderr
    data = local.read_bytes()
    assert client.cat_file(f"{b}/rel/model.gguf") == data
    assert run.json()["uploaded"] == [{"url": f"gs://{b}/rel/model.gguf", "size": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()}]
    assert client.find(b) == [f"{b}/rel/model.gguf"]
    assert not list((tmp_path / "cache" / "uploads").iterdir())
    again = run_cli("convert", llama.path, f"gs://{b}/rel/model.gguf", "--quant", "q8_0")
    assert again.code == 2 and "already exists" in again.stderr


def test_resumable_upload_is_checked_and_leaves_only_the_object(gcs, tmp_path, monkeypatch):
    """A file past gcsfs's 5 MB simple-upload limit goes up as a resumable upload, in parts (made 1 MB
    here), visible only once complete; it is checked by the MD5 GCS reports of what it stored, not read
    back; an MD5 that differs fails the upload and removes the object."""
    from modelport.storage import parse, upload
    monkeypatch.setattr(upload, "MIN_PART", 2**20)
    client, server = gcs
    b = bucket(client)
    data = os.urandom(6 * 2**20 + 12345)
    local = tmp_path / "model.gguf"
    local.write_bytes(data)
    posts, reads = server.methods["POST"], len(server.ranges)
    done = upload.put_file(local, parse(f"gs://{b}/rel/model.gguf"))
    assert done.sha256 == hashlib.sha256(data).hexdigest() and done.size == len(data)
    assert server.methods["POST"] - posts >= 7                # the session, then one POST a part
    assert len(server.ranges) == reads                        # no media GET: nothing read back
    assert client.cat_file(f"{b}/rel/model.gguf") == data
    assert client.find(b) == [f"{b}/rel/model.gguf"]
    from modelport.core.errors import ModelConversionError
    digests = upload.file_digests
    monkeypatch.setattr(upload, "file_digests", lambda path: (digests(path)[0], "not-the-md5=="))
    with pytest.raises(ModelConversionError, match="MD5 differs"):
        upload.put_file(local, parse(f"gs://{b}/rel/other.gguf"))
    assert client.find(b) == [f"{b}/rel/model.gguf"]


@pytest.mark.parametrize("case", ["no bucket", "no key", "bad credentials"])
def test_bad_urls_and_credentials_fail_in_one_line_without_secrets(gcs, llama, tmp_path, monkeypatch, case):
    client, server = gcs
    b = bucket(client)
    src, words = {
        "no bucket": (f"gs://no-such-bucket-{os.getpid()}/m", "no such"),
        "no key": (f"gs://{b}/missing/model", "no such"),
        "bad credentials": (f"gs://{b}/m", "credentials"),
    }[case]
    if case == "bad credentials":
        client.put(str(llama.path), f"{b}/m", recursive=True)
        key = bad_key(tmp_path, server.token_uri)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        secrets = [SECRET_TOKEN, *key.read_text().split("\\n")[1:3]]       # the key id and lines of the key
    else:
        secrets = []
    for args in (("convert", src, tmp_path / "out.gguf"), ("inspect", src),
                 ("convert", llama.path, f"{src}/out.gguf")):
        if case == "no key" and args[1] == llama.path:
            continue             # a new key under an existing bucket is a valid destination
        run = run_cli(*args)
        assert run.code in (1, 2), (args, run.code, run.stderr)
        line, = run.stderr.strip().splitlines()
        assert words in line and f"gs://{src.split('/')[2]}" in line, line
        for secret in secrets:
            assert secret not in run.stderr + run.stdout
    if case == "no key":         # a process of its own, so its whole stderr is seen (google-auth logs too)
        run = run_cli("inspect", src, env={"NO_GCE_CHECK": "true"})
        assert run.code == 2 and run.stderr.strip().splitlines() == [f"modelport: error: {src}: no such file or folder"], run.stderr
    assert not (tmp_path / "out.gguf").exists()
    assert client.find(b) == ([] if case != "bad credentials" else sorted(client.find(f"{b}/m")))


def test_gcsfs_errors_map_to_retries_and_one_line_errors():
    """What gcsfs raises for each answer Google gives (its validate_response, its refresh wrapping) is
    retried when transient and otherwise one line with the CLI's exit code."""
    import google.auth.exceptions
    from gcsfs.retry import HttpError, validate_response

    from modelport.core.errors import ModelConnectionError, UsageError
    from modelport.storage.retry import failure, transient

    def raised(status: int, body: bytes = b"") -> BaseException:
        try:
            validate_response(status, body, "b/bkt/o/model")
        except Exception as exc:
            return exc
        raise AssertionError(status)

    url = "gs://bkt/model"
    for status in (500, 502, 503, 504, 429, 408):
        assert transient(raised(status, b'{"error": {"message": "try again"}}')), status
    for status, kind, words in ((404, UsageError, "no such"), (403, UsageError, "access denied"),
                                (401, UsageError, "access denied"),
                                (400, ModelConnectionError, "Bad Request")):
        exc = raised(status, b'{"error": {"message": "invalid argument"}}')
        assert not transient(exc), status
        line = str(failure(exc, url))
        assert isinstance(failure(exc, url), kind) and words in line and url in line and "\n" not in line, line
    refused = HttpError({"code": 401, "message": "Invalid Credentials"})
    refused.__cause__ = google.auth.exceptions.RefreshError("invalid_grant", retryable=False)
    assert not transient(refused) and "GOOGLE_APPLICATION_CREDENTIALS" in str(failure(refused, url))
    busy = HttpError({"code": 401, "message": "Invalid Credentials"})
    busy.__cause__ = google.auth.exceptions.RefreshError("token endpoint 503", retryable=True)
    assert transient(busy)


def test_transient_faults_are_retried_by_modelport_alone(gcs, sharded, tmp_path, monkeypatch):
    """5xx, 429 and 408 answers on gs:// are retried by storage/retry.py and the result is the same file;
    with one attempt allowed, one 503 fails the command: gcsfs does not retry behind modelport's back."""
    client, server = gcs
    b = bucket(client)
    client.put(str(sharded), f"{b}/model", recursive=True)
    local = tmp_path / "local.gguf"
    assert run_cli("convert", sharded, local).code == 0
    server.fail(2, 503)
    server.fail(1, 429, "GET")
    server.fail(1, 408, "GET")
    server.fail(2, 500, "GET")
    out = tmp_path / "out.gguf"
    run = run_cli("convert", f"gs://{b}/model", out)
    assert run.code == 0, run.stderr
    assert server.injected == 6 and not server.faults
    assert out.read_bytes() == local.read_bytes()
    monkeypatch.setenv("MODELPORT_RETRIES", "1")
    server.fail(1, 503)
    run = run_cli("convert", f"gs://{b}/model", tmp_path / "again.gguf")
    assert run.code == 1, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    line = run.stderr.strip()
    assert f"gs://{b}" in line and "gave up after 1 attempts" in line
    assert not (tmp_path / "again.gguf").exists()


def test_failed_upload_leaves_nothing_in_the_bucket(gcs, tmp_path, monkeypatch):
    """Uploads refused past the retry budget fail in one line naming the URL and leave no object, partial
    or whole: a simple upload refused outright, a resumable one refused after its first part arrived
    (gcsfs cancels the session; Google shows nothing of an unfinished one)."""
    from modelport.core.errors import ModelConnectionError
    from modelport.storage import parse, upload
    monkeypatch.setattr(upload, "MIN_PART", 2**20)
    monkeypatch.setenv("MODELPORT_RETRIES", "2")
    client, server = gcs
    b = bucket(client)
    for size, passed in ((2**20, 0), (6 * 2**20, 2)):        # resumable: the session and one part go through
        local = tmp_path / "model.gguf"
        local.write_bytes(os.urandom(size))
        server.fail(passed, None, "POST")
        server.fail(1000, 500, "POST")
        with pytest.raises(ModelConnectionError) as failed:
            upload.put_file(local, parse(f"gs://{b}/rel/model.gguf"))
        server.clear()
        assert f"gs://{b}/rel/model.gguf" in str(failed.value) and "gave up after 2 attempts" in str(failed.value)
        assert "\n" not in str(failed.value)
        assert client.find(b) == []


def test_pth_from_gs_is_staged_then_removed(gcs, llama, tmp_path):
    """A pickle must be read whole: gcsfs's get_file (its download path, retries off as for reads) stages
    it, the GGUF equals the local conversion, and the staged copy is gone after."""
    client, _ = gcs
    b = bucket(client)
    ckpt = pt_checkpoint(llama, tmp_path / "ckpt" / "run.pth", global_step=7).parent
    client.put(str(ckpt), f"{b}/ckpt", recursive=True)
    local, remote = tmp_path / "local.gguf", tmp_path / "remote.gguf"
    assert run_cli("convert", ckpt / "run.pth", local).code == 0
    run = run_cli("convert", f"gs://{b}/ckpt/run.pth", remote)
    assert run.code == 0, run.stderr
    assert remote.read_bytes() == local.read_bytes()
    assert not list((tmp_path / "cache" / "mirrors").iterdir())


def test_gs_filesystem_pickles_and_keeps_its_settings(gcs):
    """The gs:// filesystem crosses a process boundary as s3fs's does, still without gcsfs's retries."""
    import pickle

    from modelport.storage import urls
    fs = urls.filesystem("gs")
    again = pickle.loads(pickle.dumps(fs))
    assert type(again) is type(fs) and not hasattr(type(again)._request, "__wrapped__")
    assert again._location == fs._location and not again.dircache.use_listings_cache


def test_watch_on_a_gs_run_publishes_to_gs(gcs, llama, tmp_path):
    """watch gs://b/run --output gs://b/releases: the checkpoint found by listing (GCS's md5Hash its change
    signature), the version uploaded under its prefix with manifest.json, latest.json naming it."""
    import json

    from modelport.service import config
    from modelport.service.places import RemoteRun
    from modelport.service.watch import WatchService
    client, _ = gcs
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/checkpoint-40", recursive=True)
    settings = dict(checkpoint_dir=f"gs://{b}/run", output=f"gs://{b}/releases", registry=str(tmp_path / "r.sqlite"),
                    settle=0, once=True, verify=False, quant=["q8_0"])
    summary = WatchService(config.load(None, settings)).run()
    assert summary["ok"] and summary["published"] == ["0.1.0-alpha+40"], summary
    assert json.loads(client.cat_file(f"{b}/releases/latest.json"))["name"] == "0.1.0-alpha+40"
    manifest = json.loads(client.cat_file(f"{b}/releases/0.1.0-alpha+40/manifest.json"))
    for entry in manifest["files"]:
        data = client.cat_file(f"{b}/releases/0.1.0-alpha+40/{entry['path']}")
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    run = RemoteRun(f"gs://{b}/run", settle=0, ready_marker=None)
    run.find()
    assert all(tag for objects in run.objects.values() for _, tag in objects.values()), run.objects
