"""A family's tensors as data: names as templates over the layer (and expert) index, shapes and
conditions as expressions over the config (architectures/expressions.py, architectures/hparams.py).

`pre` tensors come before the layers, `layer` ones once per layer (`{L}`), `post` ones after, in
the order `save_pretrained` writes them. Consecutive templates naming `{E}` under one prefix form a
block repeated `count` times: an expert block, once per expert, or Gemma 3n's AltUp projections. A
test (tests/test_architecture_specs.py) expands every family's tiny
config and compares names, shapes and order with transformers' own model on the meta device, so the
data cannot drift from transformers; at run time no transformers is needed to know them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

from .hparams import HParams

Dim = str | int


@dataclass(frozen=True)
class TensorTemplate:
    name: str                       # e.g. "model.layers.{L}.mlp.experts.{E}.up_proj.weight"
    shape: tuple[Dim, ...]          # expressions, e.g. ("expert_ffn", "hidden")
    when: str | None = None         # an expression; L (and E) are bound for layer tensors
    count: str = "experts"          # an expression: how many a template naming {E} stands for

    @property
    def per_expert(self) -> bool:
        return "{E}" in self.name

    @property
    def block(self) -> str:
        """What a template naming {E} shares with the others of its block: the name before the index."""
        return self.name.partition("{E}")[0]


def t(name: str, *shape: Dim, when: str | None = None, count: str = "experts") -> TensorTemplate:
    return TensorTemplate(name, shape, when, count)


def linear(prefix: str, out: Dim, inp: Dim, bias: bool | str = False, when: str | None = None) -> list[TensorTemplate]:
    """A Linear's weight (out, in) and, when `bias` holds (an expression or a constant), its bias."""
    items = [t(f"{prefix}.weight", out, inp, when=when)]
    if bias:
        cond = bias if isinstance(bias, str) else None
        both = " and ".join(f"({c})" for c in (when, cond) if c) or None
        items.append(t(f"{prefix}.bias", out, when=both))
    return items


def only(condition: str, templates: list[TensorTemplate] | tuple[TensorTemplate, ...]) -> list[TensorTemplate]:
    """`templates`, present only where `condition` holds too (e.g. the layers that are MoE)."""
    return [replace(t, when=f"({condition}) and ({t.when})" if t.when else condition) for t in templates]


def norm(prefix: str, size: Dim = "hidden", bias: bool = False, when: str | None = None) -> list[TensorTemplate]:
    return [t(f"{prefix}.weight", size, when=when)] + ([t(f"{prefix}.bias", size, when=when)] if bias else [])


@dataclass(frozen=True)
class Tensors:
    pre: tuple[TensorTemplate, ...]
    layer: tuple[TensorTemplate, ...]
    post: tuple[TensorTemplate, ...] = ()
    tied: dict[str, str] = field(default_factory=dict)     # alias -> target, when the config ties them
    prefix: str = ""                                         # the base model's attribute ("model", "transformer")
    classes: tuple[str, ...] = ()                            # the transformers classes these are the tensors of
    optional: tuple[str, ...] = ()      # name suffixes a checkpoint may lack: a head transformers initializes
    # (pattern, replacement): re.sub of a name here gives another name a checkpoint may store that tensor
    # under (a released checkpoint's, as transformers' conversion mapping renames on load); read as either
    spellings: tuple[tuple[str, str], ...] = ()
    # patterns (re.search) of names a checkpoint may hold that transformers does not load either (its class's
    # `_keys_to_ignore_on_load_unexpected`: a multi-token-prediction head); `{layers}` is the layer count
    unloaded: tuple[str, ...] = ()

    def describe(self, config: dict) -> bool:
        """Whether these templates are the config's model: its `architectures` names one of `classes` (or
        none). Another head (a classifier on BERT, say) has other tensors, asked of transformers instead."""
        named = config.get("architectures") or []
        return not named or not self.classes or any(name in self.classes for name in named)

    def expand(self, hp: HParams) -> dict[str, tuple[int, ...]]:
        """Every tensor name and shape for this config, in saved order."""
        out: dict[str, tuple[int, ...]] = {}
        for template, names in self._instances(hp):
            out[template.name.format(**names)] = tuple(int(hp.eval(d, **names)) for d in template.shape)
        return out

    def other_names(self, names: Iterable[str]) -> dict[str, str]:
        """Each other spelling of these names (by `spellings`) -> the name it stands for."""
        out: dict[str, str] = {}
        for name in names:
            for pattern, replacement in self.spellings:
                other = re.sub(pattern, replacement, name)
                if other != name:
                    out.setdefault(other, name)
        return out

    def unloaded_for(self, hp: HParams) -> tuple[str, ...]:
        return tuple(pattern.replace("{layers}", str(hp["layers"])) for pattern in self.unloaded)

    def tied_for(self, hp: HParams) -> dict[str, str]:
        return dict(self.tied) if hp["tie"] else {}

    def _instances(self, hp: HParams) -> Iterator[tuple[TensorTemplate, dict]]:
        yield from self._group(self.pre, hp, {})
        for layer in range(hp.n_layer):
            yield from self._group(self.layer, hp, {"L": layer})
        yield from self._group(self.post, hp, {})

    def _group(self, templates: tuple[TensorTemplate, ...], hp: HParams, names: dict) -> Iterator[tuple[TensorTemplate, dict]]:
        i = 0
        while i < len(templates):
            if not templates[i].per_expert:
                if templates[i].when is None or hp.eval(templates[i].when, **names):
                    yield templates[i], names
                i += 1
                continue
            block = [templates[i]]
            i += 1
            while i < len(templates) and templates[i].per_expert and templates[i].block == block[0].block:
                block.append(templates[i])
                i += 1
            for expert in range(int(hp.eval(block[0].count, **names) or 0)):
                bound = {**names, "E": expert}
                for template in block:
                    if template.when is None or hp.eval(template.when, **bound):
                        yield template, bound
