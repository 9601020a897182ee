"""HF model -> ONNX with torch.onnx.export (the dynamo exporter), then validation in onnxruntime.

The dynamo exporter (torch.export + onnxscript) is the one that keeps batch and sequence axes truly
dynamic for transformers 5 models; the older TorchScript tracer bakes shapes into attention masks
(measured: a tiny BERT traced at 2x7 is off by 3.1 on a padded 3x11 input). Every graph is checked
in onnxruntime against torch on shapes the export never saw, with padding; a mismatch fails.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch

from ...architectures import registered, spec_for
from ...core.bundle import ModelBundle
from ...core.errors import (
    ModelConversionError,
    ModelVerificationError,
    UnknownArchitectureError,
    UsageError,
)
from ...runtimes.onnxruntime import session
from ...runtimes.transformers import model_from_bundle
from . import ONNXOptions
from .families import FAMILIES, Component, Family

log = logging.getLogger("modelport")

EXPORT_SHAPE = (2, 7)          # batch, sequence of the example the graph is traced with
CHECK_SHAPE = (3, 11)          # and of the one it is validated with
EXTERNAL_DATA_BYTES = 1_800_000_000   # protobuf's 2 GB limit, with room for the graph itself


def torch_model(bundle: ModelBundle) -> tuple[torch.nn.Module, Family]:
    """(model, export family): the bundle in a float32 transformers model with eager attention, the plain
    matmul/softmax graph that exports for every family (T5's sdpa path trips torch.export's symbolic view
    check) and runs on every onnxruntime provider."""
    spec = spec_for(bundle.config, bundle.source)
    if spec.onnx is None and spec.no_onnx:
        raise UnknownArchitectureError(f"no ONNX export for {spec.model_type!r}: {spec.no_onnx}", bundle.source)
    if spec.onnx is None:
        supported = ", ".join(s.model_type for s in registered() if s.onnx)
        raise UnknownArchitectureError(f"ONNX export does not know model type {spec.model_type!r} "
                                       f"(supported: {supported})", bundle.source)
    model = model_from_bundle(bundle)
    model.set_attn_implementation("eager")
    return model.eval(), FAMILIES[spec.onnx]


def component_path(dst: Path, component: Component) -> Path:
    return dst.with_name(f"{dst.stem}{component.suffix}{dst.suffix or '.onnx'}")


def components_of(model, family: Family, options: ONNXOptions) -> list[Component]:
    if family.name == "decoder":
        from .families import decoder_components
        return decoder_components(model.config, options.with_past)
    if options.with_past:
        raise UsageError(f"--with-past applies to decoder-only models, not {model.config.model_type}")
    return family.components(model.config)


def _inputs(model, family: Family, component: Component, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Example inputs of `component`; a with-past graph gets the cache the prefill graph returns."""
    torch.manual_seed(shape[0] * 100 + shape[1])
    example = family.example(model.config, *shape)
    if "encoder_hidden_states" in component.inputs:
        with torch.no_grad():
            if "input_features" in example:
                hidden = model.get_encoder()(input_features=example["input_features"]).last_hidden_state
            else:
                hidden = model.get_encoder()(input_ids=example["input_ids"],
                                             attention_mask=example["attention_mask"]).last_hidden_state
        example["encoder_hidden_states"] = hidden
    if component.suffix == "_with_past":      # continue from the cache of a `sequence`-token prefix
        from .families import cache_tensors, past_names
        prefix = example["input_ids"]
        with torch.no_grad():
            cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).past_key_values
        new = prefix[:, :2] if shape == EXPORT_SHAPE else prefix[:, :1]
        example = {"input_ids": new, "attention_mask": torch.ones(shape[0], shape[1] + new.shape[1], dtype=torch.long),
                   **dict(zip(past_names(model.config.num_hidden_layers), cache_tensors(cache)))}
    return {name: example[name] for name in component.inputs}


def _dynamic_shapes(component: Component, inputs: dict[str, torch.Tensor]) -> dict:
    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str) -> torch.export.Dim:
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=1 if "past" not in name else 2)
        return dims[name]

    shapes: dict = {}
    past = [n for n in component.inputs if n.startswith("past_key_values.")]
    for name in component.inputs:
        if name in past:
            continue
        shapes[name] = {axis: dim(axis_name) for axis, axis_name in component.dynamic.get(name, {}).items()}
    if past:
        shapes["past"] = [{axis: dim(a) for axis, a in component.dynamic[n].items()} for n in past]
    return shapes


class _Graph(torch.nn.Module):
    """The model behind one component's forward, with the past cache as one list argument."""

    def __init__(self, model, component: Component) -> None:
        super().__init__()
        self.model, self.component = model, component
        self.plain = [n for n in component.inputs if not n.startswith("past_key_values.")]

    def forward(self, *args):
        plain, past = args[:len(self.plain)], (args[len(self.plain)] if len(args) > len(self.plain) else [])
        return self.component.forward(self.model, *plain, *past)


def export_component(model, family: Family, component: Component, path: Path, options: ONNXOptions,
                     source: Path) -> None:
    """One component's graph at `path` (a temporary); a failure names `source`, the model that would not export."""
    inputs = _inputs(model, family, component, EXPORT_SHAPE)
    graph = _Graph(model, component)
    plain = [inputs[n] for n in graph.plain]
    past = [inputs[n] for n in component.inputs if n.startswith("past_key_values.")]
    args = (*plain, past) if past else tuple(plain)
    shapes = _dynamic_shapes(component, inputs)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)     # "torchvision is not installed" x4 per export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(graph, args, dynamo=True, input_names=list(component.inputs),
                                        output_names=list(component.outputs), opset_version=options.opset,
                                        dynamic_shapes=(tuple(shapes[n] for n in [*graph.plain, *(["past"] if past else [])]),),
                                        external_data=large, optimize=True, verbose=False)
            program.save(str(path), external_data=large)
        except Exception as exc:  # torch.export can fail in many ways; say which, in one line
            raise ModelConversionError(f"torch.onnx.export failed for the {component.suffix or 'main'} graph: "
                                       f"{_export_error(exc)}", source) from exc


def _export_error(exc: Exception) -> str:
    """The underlying cause: torch's exporter wraps it in pages of advice."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def quantize(path: Path, quant: str) -> None:
    """fp16 with onnxruntime's converter (inputs and outputs stay float32); int8 with its dynamic quantizer."""
    import onnx
    if quant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True, disable_shape_infer=True)
        onnx.save(model, str(path))
    elif quant == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        tmp = path.with_name(path.stem + ".int8.onnx")
        # per-channel scales: per-tensor int8 drops MiniLM's sentence-embedding cosine to 0.87, per-channel keeps >= 0.987
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(path)


# Per-position cosine floors for reduced types (fp32 is bounded by max |diff| instead); see README.
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.9}


def validate(model, family: Family, component: Component, path: Path, quant: str) -> dict:
    """onnxruntime vs torch on a batch/sequence shape the export never saw; raises past the tolerance."""
    import numpy as np

    inputs = _inputs(model, family, component, CHECK_SHAPE)
    graph = _Graph(model, component)
    plain = [inputs[n] for n in graph.plain]
    past = [inputs[n] for n in component.inputs if n.startswith("past_key_values.")]
    with torch.no_grad():
        expected = graph(*plain, past) if past else graph(*plain)
    feeds = {name: inputs[name].numpy() for name in component.inputs}
    got = session(path).run(list(component.outputs), feeds)
    worst = {"max_abs_diff": 0.0, "scale": 0.0, "min_cosine": 1.0}
    for i, (ref, out) in enumerate(zip(expected, got)):
        ref = ref.float().numpy()
        if out.shape != ref.shape:
            raise ModelVerificationError(f"{component.outputs[i]}: onnxruntime gave shape {out.shape}, torch {ref.shape}",
                                         path)
        if i == 0 and component.masked_by and component.masked_by in inputs and ref.ndim >= 2 \
                and ref.shape[:2] == tuple(inputs[component.masked_by].shape):
            keep = inputs[component.masked_by].numpy().astype(bool)
            ref, out = ref[keep], out[keep]
        diff = float(np.abs(out.astype(np.float64) - ref).max()) if ref.size else 0.0
        rows_ref, rows_out = ref.reshape(-1, ref.shape[-1]).astype(np.float64), out.reshape(-1, out.shape[-1]).astype(np.float64)
        norms = np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_out, axis=1)
        cos = float(np.min(np.where(norms > 0, (rows_ref * rows_out).sum(1) / np.maximum(norms, 1e-30), 1.0)))
        worst["max_abs_diff"] = max(worst["max_abs_diff"], diff)
        worst["scale"] = max(worst["scale"], float(np.abs(ref).max()) if ref.size else 0.0)
        worst["min_cosine"] = min(worst["min_cosine"], cos)
    bound = family.tolerance * (1 + worst["scale"])
    ok = worst["max_abs_diff"] <= bound if quant == "fp32" else worst["min_cosine"] >= MIN_COSINE[quant]
    report = {"graph": path.name, "shape": list(CHECK_SHAPE), "ok": ok, **{k: round(v, 9) for k, v in worst.items()},
              "bound": {"max_abs_diff": bound} if quant == "fp32" else {"min_cosine": MIN_COSINE[quant]}}
    if not ok:
        raise ModelVerificationError(
            f"onnxruntime disagrees with torch on {path.name}: max |diff| {worst['max_abs_diff']:.3g} "
            f"(bound {bound:.3g}), min cosine {worst['min_cosine']:.6f}", path).with_report(report)
    return report


def write(bundle: ModelBundle, dst: Path, options: ONNXOptions) -> dict:
    """Export every component of the bundle's model beside `dst` (in a fresh temporary folder)."""
    model, family = torch_model(bundle)
    components = components_of(model, family, options)
    reports, timings = [], {}
    for component in components:
        path = component_path(dst, component)
        started = time.perf_counter()
        export_component(model, family, component, path, options, bundle.source)
        quantize(path, options.quant)
        timings[path.name] = round(time.perf_counter() - started, 3)
        reports.append(validate(model, family, component, path, options.quant))
    written = list(dst.parent.iterdir())
    return {"tensors": sum(1 for _ in model.state_dict()), "files": sorted(p.name for p in written),
            "bytes_written": sum(p.stat().st_size for p in written), "validation": reports, "family": family.name,
            "export_seconds": timings, "dtype": options.quant}
