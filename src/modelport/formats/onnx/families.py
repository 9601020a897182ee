"""What each kind of model exports to ONNX: its graphs ("components"), their inputs, outputs and dynamic axes.

Which kind a model type is, is its architecture spec's `onnx` field (architectures/families/), the one
registry of families; here is only how each kind exports.

Data first: a family is a list of components, each a forward function over named tensors plus
the axes that stay dynamic. Example inputs come from one function per family so that export
and validation can ask for different shapes (validation uses shapes the export never saw).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Component:
    suffix: str                                     # "" is the main file (DST itself); others sit beside it
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    forward: Callable[..., tuple]                   # forward(model, **inputs) -> outputs, in order
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    masked_by: str | None = "attention_mask"        # outputs [batch, seq, ...] compared only where this mask is 1


@dataclass(frozen=True)
class Family:
    name: str
    components: Callable[[object], list[Component]]
    example: Callable[[object, int, int], Tensors]  # example(config, batch, seq) -> every input any component takes
    tolerance: float = 1e-4                         # fp32: max |onnx - torch| <= tol * (1 + max |torch|)


# ----- inputs -------------------------------------------------------------------------------------
def _ids(vocab: int, batch: int, seq: int) -> torch.Tensor:
    return torch.randint(3, max(vocab, 4), (batch, seq))


def _mask(batch: int, seq: int) -> torch.Tensor:
    """Ones, with the last row right-padded when there is more than one row (padding must work)."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1 and seq > 2:
        mask[-1, seq - seq // 3:] = 0
    return mask


def text_example(config, batch: int, seq: int) -> Tensors:
    return {"input_ids": _ids(config.vocab_size, batch, seq), "attention_mask": _mask(batch, seq)}


def seq2seq_example(config, batch: int, seq: int) -> Tensors:
    decoder_seq = max(seq // 2, 2)
    return {**text_example(config, batch, seq), "decoder_input_ids": _ids(config.vocab_size, batch, decoder_seq)}


def image_example(config, batch: int, _seq: int) -> Tensors:
    vision = getattr(config, "vision_config", config)
    return {"pixel_values": torch.randn(batch, vision.num_channels, vision.image_size, vision.image_size)}


def whisper_example(config, batch: int, seq: int) -> Tensors:
    frames = 2 * config.max_source_positions        # Whisper's encoder takes exactly this many frames
    return {"input_features": torch.randn(batch, config.num_mel_bins, frames),
            "decoder_input_ids": _ids(config.vocab_size, batch, max(seq // 2, 2))}


def audio_example(_config, batch: int, seq: int) -> Tensors:
    samples = 400 + 80 * seq
    mask = torch.ones(batch, samples, dtype=torch.long)
    if batch > 1:
        mask[-1, samples - samples // 4:] = 0
    return {"input_values": torch.randn(batch, samples), "attention_mask": mask}


def clip_example(config, batch: int, seq: int) -> Tensors:
    seq = min(seq, config.text_config.max_position_embeddings)
    return {**text_example(config.text_config, batch, seq), **image_example(config, batch, seq)}


# ----- forwards -----------------------------------------------------------------------------------
def _first(out, *names: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for name in names:
        value = getattr(out, name, None)
        if value is not None:
            return value
    raise AttributeError(f"model output has none of {names}")


def cache_tensors(cache) -> list[torch.Tensor]:
    flat = []
    for layer in cache.layers:
        flat += [layer.keys, layer.values]
    return flat


TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


def encoder_components(config) -> list[Component]:
    head = "logits" if _has_head(config) else "last_hidden_state"
    return [Component("", ("input_ids", "attention_mask"), (head,),
                      lambda m, input_ids, attention_mask: (_first(m(input_ids=input_ids, attention_mask=attention_mask),
                                                                   "logits", "last_hidden_state"),),
                      TEXT_AXES, masked_by="attention_mask" if head == "last_hidden_state" else None)]


def _has_head(config) -> bool:
    return any(a.endswith(("ForSequenceClassification", "ForImageClassification"))
               for a in getattr(config, "architectures", None) or [])


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [n.replace("past_key_values", "present") for n in past_names(layers)]


def decoder_components(config, with_past: bool = False) -> list[Component]:
    """The main graph returns logits and the cache it built (so it can start a generation); the
    with-past graph continues one: it takes that cache and returns the extended one."""
    from transformers import DynamicCache

    layers = config.num_hidden_layers
    present = tuple(present_names(layers))

    def prefill(m, input_ids, attention_mask):
        out = m(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return (out.logits, *cache_tensors(out.past_key_values))

    def step(m, input_ids, attention_mask, *past):
        cache = DynamicCache(config=m.config)
        for i in range(layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        return (out.logits, *cache_tensors(out.past_key_values))

    main = Component("", ("input_ids", "attention_mask"), ("logits", *present), prefill, TEXT_AXES)
    if not with_past:
        return [main]
    past_axes = {n: {0: "batch", 2: "past_sequence"} for n in past_names(layers)}
    return [main, Component("_with_past", ("input_ids", "attention_mask", *past_names(layers)), ("logits", *present),
                            step, {"input_ids": {0: "batch", 1: "sequence"},
                                   "attention_mask": {0: "batch", 1: "total_sequence"}, **past_axes},
                            masked_by=None)]


def seq2seq_components(config) -> list[Component]:
    dec_axes = {"decoder_input_ids": {0: "batch", 1: "decoder_sequence"}}
    return [
        Component("", ("input_ids", "attention_mask", "decoder_input_ids"), ("logits",),
                  lambda m, input_ids, attention_mask, decoder_input_ids: (m(
                      input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits,),
                  {**TEXT_AXES, **dec_axes}, masked_by=None),
        Component("_encoder", ("input_ids", "attention_mask"), ("last_hidden_state",),
                  lambda m, input_ids, attention_mask: (m.get_encoder()(
                      input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,), TEXT_AXES),
        Component("_decoder", ("decoder_input_ids", "encoder_hidden_states", "attention_mask"), ("logits",),
                  lambda m, decoder_input_ids, encoder_hidden_states, attention_mask: (m(
                      encoder_outputs=(encoder_hidden_states,), attention_mask=attention_mask,
                      decoder_input_ids=decoder_input_ids).logits,),
                  {**dec_axes, "encoder_hidden_states": {0: "batch", 1: "sequence"},
                   "attention_mask": {0: "batch", 1: "sequence"}}, masked_by=None),
    ]


def whisper_components(config) -> list[Component]:
    dec_axes = {"decoder_input_ids": {0: "batch", 1: "decoder_sequence"}}
    feats = {"input_features": {0: "batch"}}
    return [
        Component("", ("input_features", "decoder_input_ids"), ("logits",),
                  lambda m, input_features, decoder_input_ids: (m(
                      input_features=input_features, decoder_input_ids=decoder_input_ids).logits,),
                  {**feats, **dec_axes}, masked_by=None),
        Component("_encoder", ("input_features",), ("last_hidden_state",),
                  lambda m, input_features: (m.get_encoder()(input_features=input_features).last_hidden_state,),
                  feats, masked_by=None),
        Component("_decoder", ("decoder_input_ids", "encoder_hidden_states"), ("logits",),
                  lambda m, decoder_input_ids, encoder_hidden_states: (m(
                      encoder_outputs=(encoder_hidden_states,), decoder_input_ids=decoder_input_ids).logits,),
                  {**dec_axes, "encoder_hidden_states": {0: "batch"}}, masked_by=None),
    ]


def clip_components(config) -> list[Component]:
    images = {"pixel_values": {0: "batch"}}
    return [
        Component("", ("input_ids", "attention_mask", "pixel_values"), ("logits_per_image", "text_embeds", "image_embeds"),
                  lambda m, input_ids, attention_mask, pixel_values: (lambda o: (o.logits_per_image, o.text_embeds,
                                                                                 o.image_embeds))(
                      m(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)),
                  {**TEXT_AXES, "pixel_values": {0: "batch_images"}}, masked_by=None),
        Component("_text", ("input_ids", "attention_mask"), ("text_embeds",),
                  lambda m, input_ids, attention_mask: (_first(m.get_text_features(
                      input_ids=input_ids, attention_mask=attention_mask), "text_embeds", "pooler_output"),),
                  TEXT_AXES, masked_by=None),
        Component("_vision", ("pixel_values",), ("image_embeds",),
                  lambda m, pixel_values: (_first(m.get_image_features(pixel_values=pixel_values), "image_embeds",
                                                  "pooler_output"),), images, masked_by=None),
    ]


def vision_components(config) -> list[Component]:
    head = "logits" if _has_head(config) else "last_hidden_state"
    return [Component("", ("pixel_values",), (head,),
                      lambda m, pixel_values: (_first(m(pixel_values=pixel_values), "logits", "last_hidden_state"),),
                      {"pixel_values": {0: "batch"}}, masked_by=None)]


def ctc_components(config) -> list[Component]:
    return [Component("", ("input_values", "attention_mask"), ("logits",),
                      lambda m, input_values, attention_mask: (m(input_values=input_values,
                                                                 attention_mask=attention_mask).logits,),
                      {"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}},
                      masked_by=None)]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("encoder", encoder_components, text_example),
    Family("decoder", decoder_components, text_example),
    Family("t5", seq2seq_components, seq2seq_example),
    Family("whisper", whisper_components, whisper_example, 1e-3),
    Family("clip", clip_components, clip_example),
    Family("vit", vision_components, image_example),
    Family("wav2vec2", ctc_components, audio_example, 1e-3),
)}
