"""`--report FILE.html`: one self-contained page a person reads, drawn from verify's JSON reports alone.

The verdict comes first, then the figures, then matplotlib's plots inlined as SVG (no scripts, no files
beside the page, so it can be mailed or attached to a model card). Because the page is built only
from the reports, the sidecar `.verify.json` files can be turned into a page again later.
"""
from __future__ import annotations

import html
import io
from pathlib import Path

from ..core.errors import UsageError
from ..files.atomic import atomic_output, check_destination

QUALITY_ROWS = (("ppl_source", "PPL source"), ("ppl_converted", "PPL converted"), ("ppl_ratio", "PPL ratio"),
                ("ln_ppl_ratio", "ln(PPL ratio)"), ("kld_mean", "KLD mean"), ("kld_median", "KLD median"),
                ("kld_p90", "KLD p90"), ("kld_p99", "KLD p99"), ("kld_p99_9", "KLD p99.9"), ("kld_max", "KLD max"),
                ("same_top1", "same top-1"), ("dp_rms", "RMS Δp"), ("dp_p1", "Δp p1"), ("dp_p99", "Δp p99"))
PROMPT_ROWS = (("mean_kl", "mean KL"), ("kl_p95", "KL p95"), ("top1_agreement", "top-1 agreement"),
               ("min_cosine", "min cosine"), ("max_abs_diff", "max |Δ logit|"), ("max_rel_diff", "max rel Δ"),
               ("tokenization_agreement", "tokenization agreement"))
STYLE = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;color:#222}
.pass{color:#17692f}.fail{color:#b3261e}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td.text{text-align:left;white-space:pre-wrap;font-family:monospace}figure{margin:1.5em 0}"""


def _label(report: dict) -> str:
    return Path(report["converted"]).name


def _figure(draw, title: str) -> str:
    """An SVG figure drawn by `draw(axes)` under `title`."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"      # text stays text: searchable, and readable by tests
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6))
    axes = fig.add_subplot()
    draw(axes)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    svg = out.getvalue()
    return f'<figure>{svg[svg.index("<svg"):]}</figure>'


def _number(value) -> str:
    if value is None:
        return "not compared"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cell(figures: dict | None, key: str) -> str:
    """A statistic with its standard error (`KEY_error`, as llama-perplexity prints it) when it has one."""
    if figures is None:
        return "–"
    value, error = figures.get(key), figures.get(f"{key}_error")
    return _number(value) if error is None or value is None else f"{value:.6g} ± {error:.2g}"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 0) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=text" if i < text_columns else ""}>{html.escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdicts(reports: list[dict]) -> str:
    out = []
    for r in reports:
        word, cls = ("PASS", "pass") if r["ok"] else ("FAIL", "fail")
        why = f": {html.escape('; '.join(r['failures']))}" if r["failures"] else ""
        out.append(f'<h2 class="{cls}">{word} · {html.escape(_label(r))} ({html.escape(r["dtype"])}){why}</h2>')
    return "\n".join(out)


def _plots(reports: list[dict]) -> list[str]:
    quality = [(r, r["quality"]) for r in reports if r.get("quality")]
    out = []
    if quality:
        def histogram(axes):
            for r, q in quality:
                h = q["kld_histogram"]
                axes.stairs(h["counts"], h["edges"], label=_label(r))
            axes.set_xscale("log")
            axes.set_xlabel("KL divergence per position (nats)")
            axes.set_ylabel("positions")
            axes.legend()

        def along(axes):
            for r, q in quality:
                axes.plot(q["kld_along"]["position"], q["kld_along"]["kld_mean"], label=_label(r))
            axes.set_yscale("log")
            axes.set_xlabel("scored position along the corpus")
            axes.set_ylabel("mean KLD")
            axes.legend()

        out += [_figure(histogram, "KLD histogram"), _figure(along, "KLD along the corpus")]

    def prompts(axes):
        width = 0.8 / len(reports)
        for i, r in enumerate(reports):
            values = [p["top1_agreement"] for p in r["per_prompt"]]
            axes.bar([j + i * width for j in range(len(values))], values, width, label=_label(r))
        axes.set_xticks(range(len(reports[0]["per_prompt"])), [f"prompt {j + 1}" for j in
                                                                range(len(reports[0]["per_prompt"]))])
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("same top-1 token")
        axes.legend()

    out.append(_figure(prompts, "Top-1 agreement per prompt"))
    if len(reports) > 1:
        key = "kld_mean" if quality else "mean_kl"

        def size(axes):
            for r in reports:
                value = r["quality"]["kld_mean"] if r.get("quality") else r["metrics"]["mean_kl"]
                axes.scatter(r["bytes"] / 1e6, value)
                axes.annotate(_label(r), (r["bytes"] / 1e6, value), textcoords="offset points", xytext=(4, 4))
            axes.set_yscale("log")
            axes.set_xlabel("size (MB)")
            axes.set_ylabel(key)

        out.append(_figure(size, "Size against KL divergence, one point per file"))
    return out


def render(reports: list[dict]) -> str:
    """The page for one or more results checked against one source."""
    source = reports[0]["source"]
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>modelport verify: {html.escape(source)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>modelport verify against {html.escape(source)}</h1>", _verdicts(reports)]
    names = [_label(r) for r in reports]
    parts.append("<h3>On the built-in prompts</h3>")
    parts.append(_table(["", *names], [[label, *(_cell(r["metrics"], key) for r in reports)]
                                       for key, label in PROMPT_ROWS]))
    if any(r.get("quality") for r in reports):
        q = next(r["quality"] for r in reports if r.get("quality"))
        parts.append(f"<h3>Over the corpus ({html.escape(str(q['corpus']))}: {q['chunks']} chunks of {q['ctx']} "
                     f"tokens, {q['positions']} positions scored)</h3>")
        parts.append(_table(["", *names], [[label, *(_cell(r.get("quality"), key) for r in reports)]
                                           for key, label in QUALITY_ROWS]))
    parts += _plots(reports)
    for r in reports:
        if r.get("generation"):
            g = r["generation"]
            parts.append(f"<h3>Greedy generation, {html.escape(_label(r))}: "
                         f"{'the same' if g['same'] else 'different'}</h3>")
            parts.append(_table(["prompt", "source", "converted"], [[g["prompt"], g["source"], g["converted"]]], 3))
    for r in reports:
        if r.get("quality"):
            parts.append(f"<h3>Per chunk, {html.escape(_label(r))}</h3>")
            parts.append(_table(["chunk", "PPL source", "PPL converted", "KLD mean", "same top-1", "RMS Δp"],
                                [[str(c["chunk"]), *(_number(c[k]) for k in ("ppl_source", "ppl_converted", "kld_mean",
                                                                             "same_top1", "dp_rms"))]
                                 for c in r["quality"]["per_chunk"]]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def checked_path(path: str | Path, models: list[str | Path]) -> Path:
    """`--report`'s file, refused before any work when it would replace a folder or write into (or over)
    a model being verified: a source is never modified, and neither is the file under test."""
    dst = Path(path).expanduser()
    if dst.is_dir():
        raise UsageError("--report names a folder; give a file such as report.html", dst)
    target = dst.resolve()
    for model in models:
        resolved = Path(model).expanduser().resolve()
        if target == resolved or resolved in target.parents:
            raise UsageError(f"--report would write into {model}, a model being verified; write it elsewhere", dst)
    check_destination(dst, overwrite=True)
    return dst


def write_report(reports: list[dict], path: str | Path) -> Path:
    """Write the page atomically (a reader never sees half a page)."""
    dst = Path(path).expanduser()
    with atomic_output(dst, overwrite=True) as tmp:
        tmp.write_text(render(reports), encoding="utf-8")
    return dst
