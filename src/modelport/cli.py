"""The `modelport` command: argument parsing, printing and exit codes only; the API does the work.

Exit codes: 0 success, 1 a conversion or verification failed, 2 a usage error. With `--json`,
stdout carries exactly one JSON object; notes and progress go to stderr.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable

from .core.errors import ModelportError, ModelVerificationError, UsageError, one_line

log = logging.getLogger("modelport")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plugin-path", action="append", default=[], metavar="DIR",
                   help="load architecture plugins (every *.py) from DIR (repeatable; see docs/architectures.md)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is a UsageError like any other: one line (after the usage
    reminder), exit 2, and one JSON object on stdout with --json."""

    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: every temporary is removed on the way out."""


def _terminate(signum: int, _frame) -> None:
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelport", description=__doc__.splitlines()[0])
    from .core.version import __version__
    parser.add_argument("--version", action="version", version=f"modelport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a model between formats")
    c.add_argument("src", help="HF folder, .pth/.pt/.bin checkpoint, DCP folder, or folder of checkpoints; "
                               "or a URL (s3://, gs://, hf://org/name[@rev]/path, https://, file://)")
    c.add_argument("dst", help="output path or s3:// / gs:// URL; *.gguf/*.onnx choose those formats, otherwise an HF folder")
    c.add_argument("--to", choices=["hf", "dcp", "gguf", "onnx"], help="target format (default from DST)")
    c.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    c.add_argument("--base-model", help="folder with config.json and tokenizer for a bare checkpoint")
    c.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (e.g. 500MB, 5GB)")
    c.add_argument("--checkpoint", help="which checkpoint of a folder of them (name, path or step); default newest")
    c.add_argument("--threads", type=int, help="worker threads for loading and casting (default 2)")
    c.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    c.add_argument("--trust-remote-code", action="store_true",
                   help="allow pickles that run code (never for checkpoints you did not make)")
    c.add_argument("--quant", help="GGUF type, with its bits per weight on the 0.5B benchmark model: f32 f16 bf16 "
                   "q8_0 8.5, q4_0 4.8, q4_1 5.2, q5_0 5.6, q5_1 6.1, q2_k 3.4, q3_k_s 3.8, q3_k_m 4.1, q3_k_l 4.4, "
                   "q4_k_s 4.8, q4_k_m 5.0, q5_k_s 5.6, q5_k_m 5.8, q6_k 6.6, iq4_nl 4.8, iq4_xs 4.6, iq3_s 3.8, "
                   "iq3_m 3.9, tq1_0 2.6, tq2_0 2.9; needing an importance matrix (--imatrix or --imatrix-corpus): "
                   "iq3_xxs 3.4, iq3_xs 3.7, q2_k_s 3.2, iq2_xxs 2.6, iq2_xs 2.8, iq2_s 3.0, iq2_m 3.1, iq1_s 2.3, "
                   "iq1_m 2.4 (default from --dtype, else f16/bf16 like the source); ONNX: fp32 (default), fp16, int8")
    c.add_argument("--imatrix", metavar="FILE", help="GGUF: quantize with this llama.cpp importance matrix "
                   "(llama-imatrix's GGUF or legacy .dat)")
    c.add_argument("--imatrix-corpus", metavar="FILE|builtin", help="GGUF: compute the importance matrix over this "
                   "text first, as llama-imatrix does, in llama.cpp on an F16 GGUF made on the way")
    c.add_argument("--imatrix-ctx", type=int, metavar="N", help="tokens per calibration chunk (default 512)")
    c.add_argument("--imatrix-tokens", type=int, metavar="N",
                   help="calibration tokens used at most (default: every whole chunk of the text)")
    c.add_argument("--save-imatrix", metavar="FILE", help="also write the importance matrix used (GGUF format, "
                   "which llama-quantize --imatrix reads)")
    c.add_argument("--profile", choices=["cpu", "gpu", "arm", "edge"],
                   help="write DST/model-{quant}.gguf for each GGUF type of this deployment profile")
    c.add_argument("--split-max-size", help="split GGUF output into shards of at most this size (e.g. 2G)")
    c.add_argument("--pre-tokenizer", help="llama.cpp pre-tokenizer name (any name llama.cpp knows, docs/tokenizers.md), when it "
                   "cannot be told from tokenizer.json or a GGUF names one llama.cpp does not know")
    c.add_argument("--with-past", action="store_true",
                   help="ONNX decoders: also write DST_with_past.onnx, which takes and returns the KV cache")
    c.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    c.add_argument("--verify", action="store_true", help="verify the result against the source")
    _quality_flags(c, "with --verify: ")
    c.add_argument("--add-tokens", metavar="YAML", help="add tokens / set BOS, EOS, PAD, UNK (see README)")
    c.add_argument("--chat-template", metavar="FILE", help="Jinja2 chat template for the tokenizer and GGUF metadata")
    c.add_argument("--max-length", type=int, metavar="N", help="set the model's maximum positions")
    c.add_argument("--merge-adapter", metavar="DIR",
                   help="merge this PEFT LoRA adapter into the model as it converts (what merge_and_unload() computes)")
    c.add_argument("--debug-params", action="store_true",
                   help="print every source tensor -> target name, shape, dtype and target type (and --json 'params')")
    c.add_argument("--allow-unused", action="store_true",
                   help="drop source tensors no target name takes, instead of failing")
    _common(c)

    v = sub.add_parser("verify", help="prove a converted model computes what its source computes")
    v.add_argument("source")
    v.add_argument("converted")
    v.add_argument("--base-model")
    v.add_argument("--prompt", action="append", default=[], help="extra prompt (repeatable)")
    v.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                   help="override a bound: min_cosine, mean_kl, max_rel_diff, top1_agreement, tokenization_agreement; "
                   "with --corpus also kld_mean, kld_median, kld_p90, kld_p99, kld_p99_9, kld_max, same_top1, "
                   "ppl_ratio, ln_ppl_ratio, dp_rms")
    v.add_argument("--generate", type=int, default=0, metavar="N", help="also generate N greedy tokens with both")
    _quality_flags(v)
    _common(v)

    i = sub.add_parser("inspect", help="what a model path holds")
    i.add_argument("path")
    i.add_argument("--base-model")
    _common(i)

    b = sub.add_parser("batch", help="run the conversions a YAML config lists")
    b.add_argument("config")
    b.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this machine, a process pool of --workers (default); ray: one Ray task per job")
    b.add_argument("--address", help="Ray cluster to join (HOST:PORT, auto, ray://HOST:10001); its nodes share no "
                   "disk with this one, so every file a job names must be a URL; default: start a local Ray")
    b.add_argument("--resources", action="append", default=[], metavar="NAME=AMOUNT",
                   help="Ray custom resource every task asks for (e.g. gpu=1, large_mem=1; repeatable)")
    b.add_argument("--workers", type=int, default=1, help="local pool size, or CPUs of a local Ray instance")
    _common(b)

    w = sub.add_parser("watch", help="publish every new checkpoint of a training run as a verified version")
    w.add_argument("checkpoint_dir", nargs="?", help="the training run's checkpoint folder, or a URL (s3://, gs://, hf://)")
    w.add_argument("--output", help="folder or s3:// / gs:// URL that receives OUTPUT/{version}-alpha+{step}/ and "
                                    "latest.json")
    w.add_argument("--config", help="YAML file of watch settings (flags override it)")
    w.add_argument("--to", choices=["hf", "gguf"], help="hf: HF files only; gguf (default): HF files and one GGUF per --quant")
    w.add_argument("--quant", nargs="+", help="GGUF types to publish (default f16)")
    w.add_argument("--base-model", help="config and tokenizer for bare checkpoints")
    w.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    w.add_argument("--interval", type=float, help="seconds between checks when no file event arrives (default 600)")
    w.add_argument("--settle", type=float, help="seconds a checkpoint must stay unchanged before it is read (default 10)")
    w.add_argument("--ready-marker", metavar="NAME",
                   help="a checkpoint is complete once NAME exists in its folder (FILE+NAME beside a file)")
    w.add_argument("--keep", type=int, help="published versions to keep (default 1)")
    w.add_argument("--version", dest="model_version", metavar="X.Y.Z", help="version to publish under (default 0.1.0)")
    w.add_argument("--max-attempts", type=int, help="attempts per checkpoint before giving up on it (default 3)")
    w.add_argument("--backoff", type=float, help="seconds before retrying a failed checkpoint; doubles (default 60)")
    w.add_argument("--no-verify", dest="verify", action="store_const", const=False, help="publish without verifying")
    adapters = w.add_mutually_exclusive_group()
    adapters.add_argument("--merge", dest="adapters_only", action="store_const", const=False,
                          help="LoRA adapter checkpoints: publish each merged into --base-model (default)")
    adapters.add_argument("--adapters-only", dest="adapters_only", action="store_const", const=True,
                          help="LoRA adapter checkpoints: publish each as a GGUF LoRA beside a base GGUF converted once")
    w.add_argument("--corpus", help="also score each artifact over this text (FILE or 'builtin'): perplexity and "
                   "KL-divergence statistics in the manifest, verify.html in each version")
    w.add_argument("--ctx", type=int, help="tokens per scored chunk (default 512)")
    w.add_argument("--tokens", type=int, help="tokens of the corpus scored at most (default 32768)")
    w.add_argument("--allow-unused", action="store_const", const=True,
                   help="drop checkpoint tensors no target takes, instead of failing the checkpoint")
    w.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    w.add_argument("--metrics-host", help="address the metrics endpoint binds to (default 127.0.0.1)")
    w.add_argument("--registry", help="SQLite registry file (default $MODELPORT_REGISTRY or ~/.local/share/modelport)")
    w.add_argument("--event-log", help="JSON-lines event log (default OUTPUT/events.jsonl)")
    w.add_argument("--threads", type=int)
    w.add_argument("--executor", choices=["local", "ray"],
                   help="local: build each version here (default); ray: in a Ray task, the loop, registry and "
                   "metrics staying here")
    w.add_argument("--address", help="Ray cluster to join (HOST:PORT, auto, ray://HOST:10001): CHECKPOINT_DIR and "
                   "--output must then be URLs; default: a local Ray")
    w.add_argument("--resources", action="append", default=[], metavar="NAME=AMOUNT",
                   help="Ray custom resource the conversion task asks for (e.g. gpu=1; repeatable)")
    w.add_argument("--once", action="store_const", const=True, help="run one cycle and exit")
    _common(w)

    e = sub.add_parser("ensure", help="make sure a model file (e.g. model.onnx) exists: find it, or convert and cache it")
    e.add_argument("model", nargs="?", help="Hub model id or local folder")
    e.add_argument("--file", default="model.onnx", help="the file wanted, inside the model (default model.onnx)")
    e.add_argument("--cache-dir", help="artifact cache (default $MODELPORT_CACHE_DIR or ~/.cache/modelport)")
    e.add_argument("--retries", type=int, default=3, help="download retries after the first attempt (default 3)")
    e.add_argument("--retry-delay", type=float, default=2.0, help="seconds before the first retry; doubles (default 2)")
    e.add_argument("--token", help="Hub token for private models (default $HF_TOKEN)")
    e.add_argument("--model-type", help="what you expect the model to be (checked against its config, noted if not)")
    e.add_argument("--check-exists", action="store_true", help="only answer whether the file exists (exit 1 if not)")
    e.add_argument("--metadata", action="store_true", help="print architecture, parameters, dtype, files and sizes")
    e.add_argument("--batch", help="JSON list of {model_id, file_path, model_type}, or a text file of model ids")
    _common(e)

    k = sub.add_parser("cache", help="list or clean the artifact cache")
    k.add_argument("action", choices=["ls", "clean"])
    k.add_argument("--cache-dir")
    k.add_argument("--max-size-gb", type=float, help="clean down to this size (default $MODELPORT_CACHE_MAX_GB or 50)")
    k.add_argument("--min-age-days", type=float,
                   help="never remove entries younger than this (default $MODELPORT_CACHE_MIN_AGE_DAYS or 7)")
    _common(k)

    h = sub.add_parser("history", help="every recorded conversion attempt, newest first")
    h.add_argument("--registry", help="SQLite registry file")
    h.add_argument("--command", dest="only", choices=["watch", "batch", "ensure"], help="only this command's attempts")
    h.add_argument("--limit", type=int, default=50)
    _common(h)
    return parser


def _quality_flags(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--corpus", metavar="FILE|builtin",
                   help=f"{prefix}score this text as llama-perplexity does: perplexity, KL divergence, same top-1, "
                   "delta p ('builtin': a few pages shipped with modelport)")
    p.add_argument("--ctx", type=int, metavar="N", help="tokens per chunk; the second half is scored (default 512)")
    p.add_argument("--tokens", type=int, metavar="N", help="tokens of the corpus used at most (default 32768)")
    p.add_argument("--report", metavar="FILE.html", help=f"{prefix}write a self-contained HTML report with plots")
    p.add_argument("--max-memory", metavar="SIZE", help=f"{prefix}run a transformers model whole only if that fits "
                   "in SIZE (e.g. 3GB), else one layer at a time (default: half the machine's memory)")


def _corpus(args: argparse.Namespace):
    """--corpus/--ctx/--tokens as one setting, or None; --ctx/--tokens alone are a usage error."""
    from .verify.corpus import DEFAULT_CTX, DEFAULT_TOKENS, CorpusSettings
    if args.corpus is None:
        if args.ctx is not None or args.tokens is not None:
            raise UsageError("--ctx and --tokens size the scored corpus: give --corpus FILE|builtin")
        return None
    return CorpusSettings(args.corpus, args.ctx or DEFAULT_CTX, args.tokens or DEFAULT_TOKENS)


def _convert(args: argparse.Namespace) -> tuple[dict, int]:
    from .api import convert, convert_profile
    options = dict(dtype=args.dtype, base_model=args.base_model, checkpoint=args.checkpoint,
                   overwrite=args.overwrite, trust_remote_code=args.trust_remote_code, threads=args.threads,
                   split_max_size=args.split_max_size, pre_tokenizer=args.pre_tokenizer,
                   allow_unused=args.allow_unused, debug_params=args.debug_params, edits=_edits(args),
                   imatrix=args.imatrix, imatrix_corpus=args.imatrix_corpus, imatrix_ctx=args.imatrix_ctx,
                   imatrix_tokens=args.imatrix_tokens, save_imatrix=args.save_imatrix)
    corpus = _corpus(args)
    if (corpus or args.report or args.max_memory) and not args.verify:
        raise UsageError("--corpus, --report and --max-memory describe the verification: add --verify")
    if args.report:                # before the conversion; a --profile's folder may hold its page
        from .verify.report import checked_path
        checked_path(args.report, [args.src] if args.profile else [args.src, args.dst])
    if args.profile:
        if args.quant or args.to not in (None, "gguf"):
            raise UsageError("--profile chooses the GGUF types itself; drop --quant/--to")
        result = convert_profile(args.src, args.dst, args.profile, **options)
        for note in result["notes"]:
            _say(f"note: {note}")
        for out in result["outputs"]:
            _say(f"wrote {out['destination']} ({out['dtype']}, {out['bytes_written'] / 1e6:.1f} MB, {out['seconds']:.2f} s)")
        if args.verify:
            reports, failure = _checked(args.src, [o["destination"] for o in result["outputs"]], args.base_model,
                                        corpus=corpus, report=args.report,
                                        max_memory=_max_memory(args))
            return _verified(result, reports, failure)
        return result, 0
    result = convert(args.src, args.dst, to=args.to, max_shard_size=args.max_shard_size, quant=args.quant,
                     with_past=args.with_past, opset=args.opset, **options)
    for note in result["notes"]:
        _say(f"note: {note}")
    _say(f"converted {result['source']} ({result['source_format']}) -> {result['destination']} "
         f"({result['format']}, {result['dtype']}): {result['tensors']} tensors, "
         f"{result['bytes_written'] / 1e6:.1f} MB in {result['seconds']:.2f} s")
    if args.verify:
        (report,), failure = _checked(result["source"], [args.dst], args.base_model, corpus=corpus,
                                      report=args.report, max_memory=_max_memory(args))
        return _verified(result, report, failure)
    return result, 0


def _verified(result: dict, verification: dict | list[dict], failure: ModelVerificationError | None) -> tuple[dict, int]:
    """A conversion's result with its verification; a failed verification keeps every figure where a pass
    has it and only sets ok, exit_code and error (README: "JSON")."""
    result = {**result, "verification": verification}
    if failure is None:
        return result, 0
    _say(f"modelport: error: {failure}")
    return {**result, "ok": False, "exit_code": failure.exit_code, "error": str(failure)}, failure.exit_code


def _edits(args: argparse.Namespace):
    from pathlib import Path

    from .edits import Edits
    return Edits(Path(args.add_tokens) if args.add_tokens else None,
                 Path(args.chat_template) if args.chat_template else None, args.max_length,
                 Path(args.merge_adapter).expanduser() if args.merge_adapter else None)


def _verify(args: argparse.Namespace) -> tuple[dict, int]:
    from .verify.thresholds import parse_overrides
    corpus = _corpus(args)
    (report,), failure = _checked(args.source, [args.converted], args.base_model, args.prompt,
                                  parse_overrides(args.threshold, corpus=corpus is not None), args.generate, corpus,
                                  args.report, _max_memory(args))
    if failure is not None:
        raise failure                 # its report is the payload (_dispatch): the same keys as a pass
    return report, 0


def _max_memory(args: argparse.Namespace) -> int | None:
    from .core.sizes import parse_size
    return parse_size(args.max_memory) if args.max_memory else None


def _checked(source: str, converted: list[str], base_model: str | None, prompts: list[str] | None = None,
             thresholds: dict[str, float] | None = None, generate: int = 0, corpus=None,
             report: str | None = None, max_memory: int | None = None) -> tuple[list[dict], ModelVerificationError | None]:
    """Verify each result against one run of the source, printing each one's figures whether it passes
    or not, and write the HTML report (if asked); the reports, and the first failure (or None). Any of
    them may be a URL: mounted and staged for the run (the runtimes read whole files), named by its URL
    in the reports."""
    from contextlib import ExitStack

    from .storage import mounted, staged
    from .verify import Reference, check
    from .verify.report import checked_path, write_report
    page = checked_path(report, [source, *converted]) if report else None
    reports, failure = [], None
    with ExitStack() as mounts:
        base = mounts.enter_context(mounted(base_model)) if base_model else None
        reference = Reference(staged(mounts.enter_context(mounted(source))), base, prompts, corpus, max_memory)
        for path in converted:
            try:
                reports.append(check(reference, staged(mounts.enter_context(mounted(path))), thresholds=thresholds,
                                     generate=generate))
            except ModelVerificationError as exc:
                if exc.report is None:
                    raise
                reports.append(exc.report)
                failure = failure or exc
            reports[-1].update(source=str(source), converted=str(path))
            _print_verification(reports[-1])
    if page is not None:
        write_report(reports, page)
        for r in reports:
            r["report"] = str(page)
        _say(f"report: {page}")
    return reports, failure


def _print_verification(report: dict | None) -> None:
    if not report:
        return
    m = report["metrics"]
    _say(f"verify {report['converted']} vs {report['source']} ({report['dtype']}, {m['positions']} positions): "
         f"mean KL={m['mean_kl']:.3g} ± {m['mean_kl_error']:.2g} KL p95={m['kl_p95']:.3g} "
         f"top1={m['top1_agreement']:.3f} ± {m['top1_agreement_error']:.3f} min cos={m['min_cosine']:.6f} "
         f"max|d|={m['max_abs_diff']:.3g} (rel {m['max_rel_diff']:.2g}) "
         f"tokens agree={_agreement(report['tokenization_agreement'])} -> {'PASS' if report['ok'] else 'FAIL'}")
    q = report.get("quality")
    if q:
        _say(f"  {q['corpus']}: {q['chunks']} chunks x {q['ctx']} tokens, {q['positions']} scored: "
             f"PPL {q['ppl_source']:.4g} -> {q['ppl_converted']:.4g} (ln ratio {q['ln_ppl_ratio']:+.4f} "
             f"± {q['ln_ppl_ratio_error']:.4f}), KLD mean {q['kld_mean']:.4g} median {q['kld_median']:.4g} "
             f"p99 {q['kld_p99']:.4g} max {q['kld_max']:.4g}, same top-1 {100 * q['same_top1']:.2f}%, "
             f"RMS dp {100 * q['dp_rms']:.2f}%")
    memory = report.get("memory")
    if memory:
        _say(f"  source {memory['source_path']} ({memory['source_why']}), converted {memory['converted_path']}; "
             f"peak RSS {memory['peak_rss'] / 1e9:.2f} GB")
    for failure in report.get("failures", []):
        _say(f"  failed: {failure}")
    gen = report.get("generation")
    if gen:
        _say(f"  greedy {len(gen['source_ids'])} tokens after {gen['prompt'][:40]!r} "
             f"({'identical' if gen['same'] else 'DIFFERENT'}):")
        _say(f"    source    | {gen['source']!r}")
        _say(f"    converted | {gen['converted']!r}")


def _agreement(value: float | None) -> str:
    return "not compared" if value is None else f"{value:.2f}"


def _inspect(args: argparse.Namespace) -> tuple[dict, int]:
    from .api import inspect
    info = inspect(args.path, args.base_model)
    if not args.json:
        _print_fields(info)
    return info, 0


def _print_fields(info: dict, indent: str = "") -> None:
    """One line per field; a dict of fields (a GGUF's tensor types, its vocabulary) indented below its name."""
    for key, value in info.items():
        if isinstance(value, dict) and value and not indent:
            print(key)
            _print_fields(value, "  ")
        else:
            print(f"{indent}{key:{18 - len(indent)}} {value}")


def _batch(args: argparse.Namespace) -> tuple[dict, int]:
    from pathlib import Path

    from .jobs.batch import run
    if args.address and args.executor != "ray":
        raise UsageError("--address needs --executor ray")
    if args.resources and args.executor != "ray":
        raise UsageError("--resources needs --executor ray")
    summary = run(Path(args.config), executor=args.executor, workers=args.workers, address=args.address,
                  resources=_resources(args.resources))
    for r in summary["results"]:
        _say(f"{'ok    ' if r['ok'] else 'FAILED'} {r['checkpoint']} -> {r['output'] or '-'} "
             f"{r['seconds']:.1f}s{' on ' + r['node'] if r.get('node') else ''}{'  ' + r['error'] if r['error'] else ''}")
    _say(f"{summary['succeeded']} of {summary['total']} succeeded")
    return summary, 0 if summary["ok"] else 1


def _resources(pairs: list[str]) -> dict[str, float]:
    """--resources NAME=AMOUNT ... as Ray's custom resources."""
    out = {}
    for pair in pairs:
        name, _, amount = pair.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise UsageError("--resources takes NAME=AMOUNT (e.g. gpu=1)", pair) from None
        if not name.strip() or out[name.strip()] <= 0:
            raise UsageError("--resources takes NAME=AMOUNT with an amount above 0", pair)
    return out


def _watch(args: argparse.Namespace) -> tuple[dict, int]:
    from pathlib import Path

    from .service import config
    from .service.watch import run
    overrides = dict(checkpoint_dir=args.checkpoint_dir, output=args.output, to=args.to, quant=args.quant,
                     base_model=args.base_model, dtype=args.dtype, interval=args.interval, settle=args.settle, ready_marker=args.ready_marker,
                     keep=args.keep, version=args.model_version, max_attempts=args.max_attempts, backoff=args.backoff,
                     verify=args.verify, allow_unused=args.allow_unused, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                     registry=args.registry, event_log=args.event_log, threads=args.threads, once=args.once,
                     corpus=args.corpus, ctx=args.ctx, tokens=args.tokens, adapters_only=args.adapters_only,
                     executor=args.executor, address=args.address, resources=_resources(args.resources) or None)
    if args.config is None and (args.checkpoint_dir is None or args.output is None):
        raise UsageError("watch needs CHECKPOINT_DIR and --output (or --config FILE naming them)")
    summary = run(config.load(Path(args.config) if args.config else None, overrides))
    for name in summary["published"]:
        _say(f"published {name}")
    for item in summary["failed"]:
        _say(f"FAILED {item['path']} ({item['stage']}): {item['error']}")
    for item in summary["pending"]:
        _say(f"pending {item['path']}: {item['reason']}")
    return summary, 0 if summary["ok"] else 1


def _history(args: argparse.Namespace) -> tuple[dict, int]:
    from .history import History
    registry = History.existing(args.registry)
    rows = registry.rows(args.only, limit=args.limit) if registry else []
    if not args.json:
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
            seconds = f"{r['seconds']:.1f}s" if r["seconds"] is not None else "-"
            print(f"{r['id']:>5} {when} {r['command']:7} {r['status']:9} {seconds:>8} {r['source']} -> "
                  f"{r['destination'] or '-'}{'  ' + r['error'] if r['error'] else ''}")
    path = registry.path if registry else History.location(args.registry)
    return {"ok": True, "registry": str(path), "attempts": rows}, 0


def _ensure(args: argparse.Namespace) -> tuple[dict, int]:
    from pathlib import Path

    from .hub.client import RetryPolicy
    from .hub.ensure import ensure, ensure_batch, metadata, read_batch
    if args.retries < 0 or args.retry_delay < 0:
        raise UsageError("--retries and --retry-delay cannot be negative")
    policy = RetryPolicy(args.retries, args.retry_delay)
    if args.batch:
        summary = ensure_batch(read_batch(Path(args.batch)), args.file, cache_dir=args.cache_dir, policy=policy,
                               token=args.token, check_exists=args.check_exists)
        for r in summary["results"]:
            _say(f"{'ok    ' if r['ok'] else 'FAILED'} {r['model']} {r.get('path') or r.get('error')}")
        return summary, 0 if summary["ok"] else 1
    if not args.model:
        raise UsageError("ensure needs MODEL (or --batch FILE)")
    if args.metadata:
        info = metadata(args.model, policy, args.token)
        if not args.json:
            for key, value in info.items():
                print(f"{key:20} {value}")
        return info, 0
    result = ensure(args.model, args.file, cache_dir=args.cache_dir, policy=policy, token=args.token,
                    check_exists=args.check_exists, model_type=args.model_type)
    for note in result.get("notes", []):
        _say(f"note: {note}")
    if args.check_exists:
        _say(f"{args.file} {'exists' if result['exists'] else 'does not exist'} for {args.model}"
             f"{' (' + result['source'] + ')' if result['exists'] else ''}")
        return result, 0 if result["exists"] else 1
    if not args.json:
        print(result["path"])
    _say(f"{result['source']}: {result['path']} ({result['seconds']:.2f} s)")
    return result, 0


def _cache(args: argparse.Namespace) -> tuple[dict, int]:
    from .hub import cache
    if args.action == "ls":
        found = [e.as_dict() for e in cache.entries(args.cache_dir)]
        if not args.json:
            for e in found:
                print(f"{e['size'] / 1e6:10.1f} MB  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(e['last_used']))}"
                      f"  {e['path']}")
        return {"ok": True, "cache": str(cache.artifacts(args.cache_dir)), "entries": found,
                "size": sum(e["size"] for e in found)}, 0
    result = cache.clean(args.cache_dir, args.max_size_gb * 1e9 if args.max_size_gb is not None else None,
                         args.min_age_days * 86400 if args.min_age_days is not None else None)
    _say(f"removed {len(result['removed'])} entr{'y' if len(result['removed']) == 1 else 'ies'}; "
         f"cache now {result['size'] / 1e6:.1f} MB")
    return {"ok": True, **result}, 0


COMMANDS: dict[str, Callable[[argparse.Namespace], tuple[dict, int]]] = {
    "convert": _convert, "verify": _verify, "inspect": _inspect, "batch": _batch, "watch": _watch,
    "history": _history, "ensure": _ensure, "cache": _cache,
}


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, so main() called in-process (tests,
    notebooks) prints where that caller's stderr goes, not where the first call's went."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _log_to_stderr() -> None:
    """modelport's own progress at INFO on stderr; libraries (onnxscript, onnxruntime, ...) only warn."""
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("modelport: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _quiet_libraries() -> None:
    """Only errors from transformers and no hub progress bars, set through their environment variables
    so that a command that never needs transformers (HF -> GGUF) does not pay ~0.7 s to import it."""
    import warnings
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:         # read its variable at import: say it directly too
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    logging.basicConfig(level=logging.WARNING, format="modelport: %(message)s", stream=sys.stderr)
    _log_to_stderr()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        payload, code = _dispatch(argv)
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        _say(f"modelport: interrupted by {name}; nothing was left at the destination")
        code = 143 if isinstance(exc, Terminated) else 130
        payload = {"ok": False, "error": f"interrupted by {name}", "exit_code": code}
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        payload.setdefault("exit_code", code)
        payload.setdefault("error", None)
        print(json.dumps(payload, default=_jsonable))
    return code


def _dispatch(argv: list[str]) -> tuple[dict, int]:
    """Run one command; every failure becomes (error payload, exit code) after one line on stderr."""
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        from .files.memory import bound_heap
        bound_heap()
        if args.plugin_path:
            from .architectures import add_plugin_path
            for folder in args.plugin_path:
                add_plugin_path(folder)
        return COMMANDS[args.command](args)
    except ModelportError as exc:
        _say(f"modelport: error: {exc}")
        payload = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        if isinstance(exc, ModelVerificationError) and exc.report:     # every figure where a pass has it
            payload = {**exc.report, **payload}
        return payload, exc.exit_code
    except RecursionError:       # a structure nested past any real model's (hostile input): not a crash
        _say("modelport: error: input nested too deeply to read")
        return {"ok": False, "error": "input nested too deeply to read", "exit_code": 1}, 1
    except Exception as exc:  # a bug, not a bad input: say so, and show where with MODELPORT_DEBUG=1
        _say(f"modelport: internal error: {one_line(f'{type(exc).__name__}: {exc}')}")
        if os.environ.get("MODELPORT_DEBUG"):
            traceback.print_exc()
        return {"ok": False, "error": f"internal error: {exc}", "exit_code": 1}, 1


def _jsonable(value: Any) -> Any:
    return str(value)


def run() -> None:
    """The `modelport` console command. The heap is frozen out of the garbage collector's sight,
    since a collection's cost is the objects it walks and torch alone leaves hundreds of thousands:
    this takes ~0.4 s off every command's exit (measured) and the collections a run makes. Not done
    in main(), which tests call in-process, where frozen objects would never be freed."""
    gc.freeze()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
