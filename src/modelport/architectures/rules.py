"""Tensor rules that know their inverse: how an HF tensor's values become a target's, and back.

Each rule claims HF tensors by name suffix and says what it does to one: its values (`forward`, and
`inverse` for reading back), its shape, whether a block of rows can be transformed alone (so a
tensor streams) and in what unit (whole heads for a permutation). Rules chain in order; their
inverses run in reverse. Structure (many tensors into one) is the mapping's business: stacked
experts (gguf_mapping.py) are whole tensors side by side, each going through these rules.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from .hparams import HParams


@dataclass(frozen=True)
class Rule:
    suffixes: tuple[str, ...]

    def matches(self, name: str) -> bool:
        return name.endswith(self.suffixes)

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape `inverse` gives back (every rule but a split keeps or swaps axes both ways alike)."""
        return self.shape(shape)

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        """Source rows (first-dimension entries) a streamed block must hold whole (1: any); None when only the
        whole tensor will do."""
        return 1

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        raise NotImplementedError

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        raise NotImplementedError

    def lora(self, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> "tuple[np.ndarray, np.ndarray] | None":
        """The rule applied to a low-rank W = b @ a through its factors (a LoRA pair: a is rank x in, b out x
        rank), as llama.cpp's LoRA converter applies it: a rule that reorders or cuts W's rows does so to b's
        rows (the default); None when the result is no longer such a product (an offset)."""
        return a, self.forward(b, hp, b.shape[0])

    def bound(self, hp: "HParams") -> "Rule":
        """This rule with what it reads of the config made concrete (a shape that depends on it); most read none."""
        return self


@dataclass(frozen=True)
class PermuteHeads(Rule):
    """HF keeps each head's rotary pairs as two halves; llama.cpp's NORM rope wants them interleaved."""

    heads: str = "heads"            # expression: how many heads the tensor's rows hold
    rotary: str | None = None       # expression: the rotated rows of each head, when only the first ones are

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int:
        return shape[0] // hp.eval(self.heads)

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return self._each_head(array, hp.eval(self.heads) * array.shape[0] // full_rows, hp, permute_rows)

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return self._each_head(array, hp.eval(self.heads), hp, unpermute_rows)

    def _each_head(self, array: "np.ndarray", n_head: int, hp: "HParams", how) -> "np.ndarray":
        """`how` over every head's rows, or over only the first `rotary` of each (partial rotary: llama.cpp
        rotates a head's first n_rot values, pairwise)."""
        if self.rotary is None:
            return how(array, n_head)
        import numpy as np
        rot = int(hp.eval(self.rotary))
        heads = array.reshape(n_head, array.shape[0] // n_head, *array.shape[1:])
        if rot >= heads.shape[1]:
            return how(array, n_head)
        rotated = how(np.ascontiguousarray(heads[:, :rot]).reshape(n_head * rot, *array.shape[1:]), n_head)
        return np.concatenate([rotated.reshape(n_head, rot, *array.shape[1:]), heads[:, rot:]],
                              axis=1).reshape(array.shape)


@dataclass(frozen=True)
class Transpose(Rule):
    """The last two axes swapped: a 2-D weight stored (in, out) like GPT-2's Conv1D, or each expert of a
    3-D expert tensor saved (in, out) like Llama 4's and gpt-oss's. llama.cpp wants (out, in)."""

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:-2], shape[-1], shape[-2]) if len(shape) >= 2 else shape

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        return 1 if len(shape) >= 3 else None        # expert by expert; a 2-D transpose needs every row

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return array.swapaxes(-1, -2) if array.ndim >= 2 else array

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        return np.ascontiguousarray(array.swapaxes(-1, -2)) if array.ndim >= 2 else array

    def lora(self, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> "tuple[np.ndarray, np.ndarray]":
        return b.swapaxes(-1, -2), a.swapaxes(-1, -2)          # (b a)^T = a^T b^T


@dataclass(frozen=True)
class AddOffset(Rule):
    """A constant added in float32: Gemma's RMSNorm scales by (1 + w), llama.cpp's by w."""

    value: float = 1.0

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        return array.astype(np.float32) + np.float32(self.value)

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        return array.astype(np.float32) - np.float32(self.value)

    def lora(self, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> None:
        return None


def _not_low_rank(rule: Rule, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> None:
    """Rule.lora of the state-space rules: what they change (a decay, a conv kernel, a norm's grouping) is
    no longer b @ a afterwards, and no LoRA adapts those tensors."""
    return None


@dataclass(frozen=True)
class NegExp(Rule):
    """State-space models keep their decay as `A_log`; llama.cpp stores `A = -exp(A_log)`. The inverse,
    `log(-A)`, is exact to float32 rounding, not bit for bit: a round trip may move the last bit."""

    lora = _not_low_rank

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        return -np.exp(array.astype(np.float32))

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        return np.log(-array.astype(np.float32))


@dataclass(frozen=True)
class Squeeze(Rule):
    """A length-1 axis dropped: a depthwise conv1d kernel [d, 1, k] as llama.cpp's [d, k]; put back on the
    way in."""

    lora = _not_low_rank

    axis: int = 1

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:self.axis], *shape[self.axis + 1:])

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:self.axis], 1, *shape[self.axis:])

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return array.reshape(self.shape(array.shape))

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array.reshape(self.inverse_shape(array.shape))


@dataclass(frozen=True)
class Unsqueeze(Rule):
    """A length-1 axis added at `axis` of the result (as numpy.expand_dims places it): trailing by default,
    Mamba-2's per-head A and D [h] as llama.cpp's [h, 1]; leading (0), Kimi Linear's conv1d kernels
    [d, 1, k] as the [1, d, 1, k] llama.cpp's converter writes. Either way the values keep their order."""

    lora = _not_low_rank

    axis: int = -1

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        at = self.axis % (len(shape) + 1)
        return (*shape[:at], 1, *shape[at:])

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        at = self.axis % len(shape)
        return (*shape[:at], *shape[at + 1:])

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        """A leading axis makes the whole tensor one row of the result: a block of rows is no longer rows."""
        return None if self.axis % (len(shape) + 1) == 0 else 1

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return array.reshape(self.shape(array.shape))

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array.reshape(self.inverse_shape(array.shape))


@dataclass(frozen=True)
class Grouped(Rule):
    """A 1-D weight viewed as `groups` rows (an expression over the config): Mamba-2's grouped RMSNorm
    [d] as llama.cpp's [n_group, d / n_group]. `n` is the count once bound to a config."""

    lora = _not_low_rank

    groups: str = "1"
    n: int = 0

    def bound(self, hp: "HParams") -> "Grouped":
        return replace(self, n=int(hp.eval(self.groups)))

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.n:
            raise ValueError(f"{type(self).__name__}({self.groups!r}) used before it was bound to a config")
        return (self.n, shape[0] // self.n)

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] * shape[1],)

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> None:
        return None

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return array.reshape(self.shape(array.shape))

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array.reshape(-1)


@dataclass(frozen=True)
class Scale(Rule):
    """Rows multiplied by constants of the config, in float32: a multiplier the model applies to a layer's
    output (Falcon-H1's μP multipliers), which llama.cpp's converter folds into the weights. `factor` is an
    expression: one number for every row, or a list of [rows, number] pairs scaling consecutive slices of
    the rows (Falcon-H1's in_proj: z, x, B, C, dt), which needs the tensor whole. The inverse divides:
    exact to float32 rounding, not bit for bit."""

    factor: str = "1.0"

    def _factors(self, hp: "HParams", rows: int, ndim: int) -> "np.ndarray":
        import numpy as np
        value = hp.eval(self.factor)
        if not isinstance(value, list):
            return np.float32(value)
        factors = np.concatenate([np.full(int(n), f, dtype=np.float32) for n, f in value])
        if len(factors) != rows:
            raise ValueError(f"{self.factor!r} scales {len(factors)} rows of a tensor with {rows}")
        return factors.reshape(rows, *(1,) * (ndim - 1))

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        return None if isinstance(hp.eval(self.factor), list) else 1

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        return array.astype(np.float32) * self._factors(hp, array.shape[0], array.ndim)

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        return array.astype(np.float32) / self._factors(hp, array.shape[0], array.ndim)


@dataclass(frozen=True)
class UngroupSections(Rule):
    """Rows kept group by group, every group the same sections (q_g, k_g, v_g for each key head g: a part of
    Qwen3-Next's fused in_proj_qkvz), as llama.cpp wants them: every group's first section, then every
    group's second, and so on. It takes the (groups, rows, in) part a grouped Take cuts and gives
    (groups x rows, in); `sizes` are the section row counts once bound to a config. A reordering of whole
    rows, so it needs the tensor whole."""

    sections: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()

    def bound(self, hp: "HParams") -> "UngroupSections":
        return replace(self, sizes=tuple(int(hp.eval(section)) for section in self.sections))

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] * shape[1], *shape[2:])

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // sum(self.sizes), sum(self.sizes), *shape[1:])

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> None:
        return None

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        grouped = array.reshape(-1, sum(self.sizes), array.shape[-1])
        sections = np.split(grouped, np.cumsum(self.sizes)[:-1], axis=1)
        return np.concatenate([section.reshape(-1, array.shape[-1]) for section in sections])

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        groups = array.shape[0] // sum(self.sizes)
        blocks = np.split(array, np.cumsum([groups * size for size in self.sizes])[:-1])
        return np.concatenate([block.reshape(groups, size, *array.shape[1:])
                               for block, size in zip(blocks, self.sizes)], axis=1)


@dataclass(frozen=True)
class PadRows(Rule):
    """A table with fewer rows than llama.cpp reads (one per token) extended to `rows`, each added row a copy
    of the first: Gemma 3n's per-layer embeddings have `vocab_size_per_layer_input` rows, and transformers
    looks an id beyond them up as id 0. The inverse keeps the first `kept` rows. `sizes` are (rows, kept)
    once bound to a config; extending needs the whole table (its first row), an equal one streams."""

    rows: str = "vocab"
    kept: str = "vocab"
    sizes: tuple[int, int] = (0, 0)

    def bound(self, hp: "HParams") -> "PadRows":
        return replace(self, sizes=(int(hp.eval(self.rows)), int(hp.eval(self.kept))))

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.sizes[0]:
            raise ValueError(f"{type(self).__name__}({self.rows!r}) used before it was bound to a config")
        return (self.sizes[0], *shape[1:])

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.sizes[1], *shape[1:])

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        return 1 if int(hp.eval(self.rows)) == shape[0] else None

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        missing = int(hp.eval(self.rows)) - full_rows
        if missing <= 0:
            return array
        return np.concatenate([array, np.repeat(array[:1], missing, axis=0)])

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array[:int(hp.eval(self.kept))]


def permute_rows(weight: "np.ndarray", n_head: int) -> "np.ndarray":
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def unpermute_rows(weight: "np.ndarray", n_head: int) -> "np.ndarray":
    return (weight.reshape(n_head, weight.shape[0] // n_head // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


@dataclass(frozen=True)
class Chain:
    """The rules one tensor goes through, in order."""

    rules: tuple[Rule, ...]

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for rule in self.rules:
            shape = rule.shape(shape)
        return shape

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for rule in reversed(self.rules):
            shape = rule.inverse_shape(shape)
        return shape

    @property
    def take(self) -> "Take | None":
        """The split this chain takes one part of, if any."""
        return next((r for r in self.rules if isinstance(r, Take)), None)

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        unit = 1
        for rule in self.rules:
            u = rule.unit(hp, shape)
            if u is None:
                return None
            unit = unit * u // _gcd(unit, u)
            shape = rule.shape(shape)
        return unit

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        for rule in self.rules:
            array = rule.forward(array, hp, full_rows)
        return array

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        for rule in reversed(self.rules):
            array = rule.inverse(array, hp)
        return array

    def lora(self, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> "tuple[np.ndarray, np.ndarray] | None":
        """Every rule applied to a LoRA pair (Rule.lora); None when one cannot be."""
        for rule in self.rules:
            pair = rule.lora(a, b, hp)
            if pair is None:
                return None
            a, b = pair
        return a, b

    def bound(self, hp: "HParams") -> "Chain":
        return Chain(tuple(rule.bound(hp) for rule in self.rules))

    @property
    def changes_dtype(self) -> bool:
        return any(isinstance(r, (AddOffset, NegExp, Scale)) for r in self.rules)

    def swapped(self) -> "Chain | None":
        """This chain as it acts on the tensor stored with its last two axes swapped (MXFP4 experts are), when
        there it only moves whole rows: one Transpose, which the swap undoes, and cuts of the last axis, which
        are cuts of the stored rows; None for any other rule, which needs the values."""
        from dataclasses import replace
        rules: list[Rule] = []
        transposed = 0
        for rule in self.rules:
            if isinstance(rule, Transpose):
                transposed += 1
            elif isinstance(rule, Take) and not rule.groups and rule.axis == -1:
                rules.append(replace(rule, axis=-2))
            else:
                return None
        return Chain(tuple(rules)) if transposed == 1 else None


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


@dataclass(frozen=True)
class RegroupQKV(Rule):
    """A fused QKV stored head by head ([q_h; k_h; v_h] for each head: GPT-NeoX, BLOOM) as llama.cpp wants
    it: every head's q, then every k, then every v. A reordering of whole rows, so it needs the tensor whole."""

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> None:
        return None

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        return array.reshape(hp.n_head, 3, -1, *array.shape[1:]).swapaxes(0, 1).reshape(array.shape)

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array.reshape(3, hp.n_head, -1, *array.shape[1:]).swapaxes(0, 1).reshape(array.shape)


@dataclass(frozen=True)
class UngroupQKV(Rule):
    """A fused QKV stored per KV group ([q x group; k; v] for each KV head: Falcon) as q, k, v blocks."""

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> None:
        return None

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        import numpy as np
        kv, group = hp.n_head_kv, hp.n_head // hp.n_head_kv
        x = array.reshape(kv, group + 2, -1, *array.shape[1:])
        q, k, v = x[:, :group], x[:, group], x[:, group + 1]
        return np.concatenate([part.reshape(-1, *array.shape[1:]) for part in (q, k, v)]).reshape(array.shape)

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        import numpy as np
        kv, group = hp.n_head_kv, hp.n_head // hp.n_head_kv
        head = array.shape[0] // (kv * (group + 2))
        rest = array.shape[1:]
        q = array[:kv * group * head].reshape(kv, group, head, *rest)
        k = array[kv * group * head:kv * (group + 1) * head].reshape(kv, 1, head, *rest)
        v = array[kv * (group + 1) * head:].reshape(kv, 1, head, *rest)
        return np.concatenate([q, k, v], axis=1).reshape(array.shape)


@dataclass(frozen=True)
class Take(Rule):
    """Part `index` of a fused tensor along `axis`: one of `parts` equal parts, or `sizes[index]` wide
    when the parts differ; `interleaved`, every parts-th entry from `index` (gpt-oss's gate and up);
    `groups`, the rows first viewed as that many groups (DeepSeek's kv_b_proj: per head, k then v).
    A part alone cannot be undone: `join` puts the parts back together."""

    index: int = 0
    parts: int = 2
    axis: int = -1
    interleaved: bool = False
    sizes: tuple[int, ...] = ()
    groups: int = 0

    def _grouped(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.groups, shape[0] // self.groups, *shape[1:]) if self.groups else shape

    def _cut(self, length: int) -> slice:
        if self.interleaved:
            return slice(self.index, None, self.parts)
        start = sum(self.sizes[:self.index]) if self.sizes else self.index * (length // self.parts)
        return slice(start, start + (self.sizes[self.index] if self.sizes else length // self.parts))

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self._grouped(shape)
        axis = self.axis % len(shape)
        cut = self._cut(shape[axis])
        return (*shape[:axis], len(range(shape[axis])[cut]), *shape[axis + 1:])

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape                # the part, as `inverse` gives it

    def joined_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The whole tensor's shape, from every part's (in order)."""
        axis = self.axis % len(shapes[0])
        shape = (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1:])
        return (shape[0] * shape[1], *shape[2:]) if self.groups else shape

    def unit(self, hp: "HParams", shape: tuple[int, ...]) -> int | None:
        return 1 if not self.groups and self.axis % len(shape) > 0 else None    # a cut across rows needs them all

    def forward(self, array: "np.ndarray", hp: "HParams", full_rows: int) -> "np.ndarray":
        array = array.reshape(self._grouped(array.shape))
        axis = self.axis % array.ndim
        return array[(slice(None),) * axis + (self._cut(array.shape[axis]),)]

    def inverse(self, array: "np.ndarray", hp: "HParams") -> "np.ndarray":
        return array                # the part as it is; `join` makes the whole

    def lora(self, a: "np.ndarray", b: "np.ndarray", hp: "HParams") -> "tuple[np.ndarray, np.ndarray]":
        """A cut across W's columns takes a's columns; any other, b's rows."""
        if not self.groups and self.axis % b.ndim == b.ndim - 1:
            return self.forward(a, hp, a.shape[0]), b
        part = self.forward(b, hp, b.shape[0])
        return a, part.reshape(-1, part.shape[-1])

    def join(self, parts: list["np.ndarray"]) -> "np.ndarray":
        import numpy as np
        axis = self.axis % parts[0].ndim
        whole = np.stack(parts, axis=axis + 1) if self.interleaved else np.concatenate(parts, axis=axis)
        return whole.reshape(self.joined_shape([p.shape for p in parts]))
