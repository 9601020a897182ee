"""The source model's logits without holding the model: transformers' own modules, one weight at a time.

A model too large to load whole is built on the meta device (buffers such as the rotary frequencies
are computed as usual), and every sequence being compared runs transformers' own forward in a thread
of its own. The threads take turns (`Baton`): each stops before every module that owns weights and
hands the turn on, so all sequences pass a module before any goes further, and that module's weights
are read from the bundle (float32, in row blocks) once per pass, used by every sequence, then dropped
when the next is read (`Weights`). What runs is transformers' function by construction (its decoder
layers, norms, rotary embedding, masks, softcapping): nothing here restates the math.

Two modules are not run that way. The input embedding is applied by its own module to only the rows
the sequences use; the output head is applied in vocabulary blocks, to one block of one sequence's
positions at a time (`rows_from`), inside the model's own causal-LM forward (which adds any logit
scaling or softcapping), once the decoder has run.

Memory is the weights of one module, the hidden states and live activations of the sequences in one
pass (`passes` sizes them under the memory budget), and one block of positions' logits. Families whose modules cannot be
filled from the checkpoint's names one module at a time run whole (`unserved` says why).
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..architectures import spec_for
from ..architectures.expected import build_model
from ..core.bundle import ModelBundle, TensorRef, rows_per_block
from ..core.dtypes import cast
from .rows import BLOCK_BYTES, LogitRows, block_positions
from .transformers import load_tokenizer

if TYPE_CHECKING:
    from torch import nn

BASE_BYTES = 700 << 20        # torch, transformers and a tokenizer imported, before any weight (measured ~600 MB)


def _float32(ref: TensorRef) -> torch.Tensor:
    """The tensor as float32; from a format that reads rows alone (safetensors, by mmap), filled block by
    block, so its source dtype is never held whole beside it."""
    if ref.rows is None or len(ref.shape) < 2:
        return torch.from_numpy(np.ascontiguousarray(cast(ref.load(), "float32")))
    out = torch.empty(ref.shape, dtype=torch.float32)
    start = 0
    for block in ref.row_chunks("float32"):
        out[start:start + block.shape[0]] = torch.from_numpy(np.ascontiguousarray(block))
        start += block.shape[0]
    return out


def _rows(ref: TensorRef, wanted: list[int]) -> np.ndarray:
    """Rows `wanted` (sorted, distinct) of a tensor as float32: each run of consecutive rows read alone
    where the format allows it, else taken from the whole tensor."""
    if ref.rows is None:
        return cast(ref.load()[wanted], "float32")
    runs, start = [], 0
    for i in range(1, len(wanted) + 1):
        if i == len(wanted) or wanted[i] != wanted[i - 1] + 1:
            runs.append(cast(ref.load_rows(wanted[start], wanted[i - 1] + 1), "float32"))
            start = i
    return np.concatenate(runs)


class Baton:
    """Round-robin turns among worker threads: only the holder runs; `hand_on` gives the turn to the next
    live worker and waits for it to come back. Workers that meet the same stops in the same order pass
    each stop together."""

    def __init__(self, workers: int) -> None:
        self.cond = threading.Condition()
        self.live = [True] * workers
        self.turn = 0

    def _next(self, k: int) -> int:
        n = len(self.live)
        for step in range(1, n + 1):
            if self.live[(k + step) % n]:
                return (k + step) % n
        return k

    def wait(self, k: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == k)

    def hand_on(self, k: int) -> None:
        with self.cond:
            self.turn = self._next(k)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == k)

    def finish(self, k: int) -> None:
        with self.cond:
            self.live[k] = False
            self.turn = self._next(k)
            self.cond.notify_all()


class Weights:
    """Each weighted module's own parameters, read from the bundle just before it runs. Loading one drops
    every other that no sequence is inside (a layer module holding weights of its own stays while its
    children run)."""

    def __init__(self, modules: dict[str, "nn.Module"], refs: dict[str, TensorRef]) -> None:
        self.modules = modules
        self.refs = refs
        self.loaded: set[str] = set()
        self.inside: dict[str, int] = {}
        self.loads = 0

    def enter(self, name: str) -> None:
        if name not in self.loaded:
            for other in [m for m in self.loaded if not self.inside.get(m)]:
                self._drop(other)
            module = self.modules[name]
            for key in _own(module):
                module._parameters[key] = torch.nn.Parameter(_float32(self.refs[f"{name}.{key}" if name else key]),
                                                             requires_grad=False)
            self.loaded.add(name)
            self.loads += 1
        self.inside[name] = self.inside.get(name, 0) + 1

    def leave(self, name: str) -> None:
        self.inside[name] -= 1

    def _drop(self, name: str) -> None:
        module = self.modules[name]
        for key in _own(module):
            param = module._parameters[key]
            module._parameters[key] = torch.nn.Parameter(torch.empty(param.shape, device="meta"), requires_grad=False)
        self.loaded.discard(name)

    def drop_all(self) -> None:
        for name in list(self.loaded):
            self._drop(name)


class _Replay(torch.nn.Module):
    """Stands in for the decoder inside the causal-LM forward: returns what the decoder returned."""

    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


def _positions(output, start: int, stop: int):
    """A decoder's output (a transformers ModelOutput) cut to positions [start, stop)."""
    fields = dict(output.items())
    fields["last_hidden_state"] = fields["last_hidden_state"][:, start:stop]
    return type(output)(**fields)


class _BlockedHead(torch.nn.Module):
    """The output head (a Linear) applied a block of vocabulary rows at a time, read from the bundle."""

    def __init__(self, weight: TensorRef, bias: TensorRef | None) -> None:
        super().__init__()
        self.weight_ref, self.bias = weight, (None if bias is None else _float32(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vocab, width = self.weight_ref.shape
        out = torch.empty(*x.shape[:-1], vocab, dtype=torch.float32)
        step = rows_per_block(width)
        whole = self.weight_ref.load() if self.weight_ref.rows is None else None     # a format without row reads
        for start in range(0, vocab, step):
            stop = min(vocab, start + step)
            block = whole[start:stop] if whole is not None else self.weight_ref.load_rows(start, stop)
            w = torch.from_numpy(np.ascontiguousarray(cast(block, "float32")))
            out[..., start:stop] = torch.nn.functional.linear(
                x, w, None if self.bias is None else self.bias[start:stop])
        return out


@dataclass(frozen=True)
class Parts:
    """Where a causal LM's parts are: its decoder (the attribute under `prefix`), input embedding and head."""

    model: "nn.Module"
    prefix: str
    embedding: str       # parameter name of the input embedding's weight
    head: str            # attribute of the model holding the head Linear
    head_weight: str
    head_bias: str | None


def _parts(model: "nn.Module") -> Parts | str:
    """The model's parts, or why it cannot run layer-major (a string)."""
    from torch import nn

    prefix = getattr(model, "base_model_prefix", "")
    decoder = getattr(model, prefix, None) if prefix else None
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(decoder, nn.Module) or not isinstance(head, nn.Linear):
        return "it is not a decoder with a language-model head"
    if type(embedding) is not nn.Embedding and not isinstance(embedding, nn.Embedding):
        return "its input embedding is not an embedding table"
    attr = next((k for k, m in model._modules.items() if m is head), None)
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    if attr is None or id(embedding) not in names:
        return "its output head is not a module of its own"
    return Parts(model, prefix, f"{names[id(embedding)]}.weight", attr, f"{attr}.weight",
                 f"{attr}.bias" if head.bias is not None else None)


def _own(module: "nn.Module") -> list[str]:
    """The names of the parameters a module holds itself (not its children's; an absent bias is None)."""
    return [key for key, param in module._parameters.items() if param is not None]


def _weighted(model: "nn.Module", skip: set[str]) -> dict[str, "nn.Module"]:
    """Every module owning parameters itself, by name, but the embedding and head (run otherwise)."""
    return {name: m for name, m in model.named_modules() if _own(m) and name not in skip}


def _empty(hf_class: str, config: dict) -> "nn.Module":
    """The model with its weights on the meta device and its buffers (rotary frequencies, masks) made
    on the CPU as transformers' loader makes them: materialized, then set by the model's own
    `initialize_weights` (which leaves meta weights as they are)."""
    model = build_model(hf_class, config, "meta")
    for module in model.modules():
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:
                module._buffers[key] = torch.empty_like(buffer, device="cpu")
    model.initialize_weights()
    return model.eval()


def build(bundle: ModelBundle) -> tuple[Parts | None, str]:
    """The model on the meta device (buffers computed) and its parts, or (None, why it cannot run layer-major)."""
    spec = spec_for(bundle.config, bundle.source)
    why = spec.recurrent or spec.not_layer_major
    if why:
        return None, why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = _empty(spec.hf_class, bundle.config)
        except Exception as exc:     # noqa: BLE001 - any failure to build means: run it whole
            return None, f"transformers cannot build it empty ({type(exc).__name__}: {exc})"
    parts = _parts(model)
    if isinstance(parts, str):
        return None, parts
    skip = {parts.embedding.rpartition(".")[0], parts.head}
    for name, module in _weighted(model, skip).items():
        for key in _own(module):
            param = module._parameters[key]
            full = f"{name}.{key}" if name else key
            ref = bundle.tensors.get(full)
            if ref is None or tuple(ref.shape) != tuple(param.shape):
                return None, (f"transformers names or shapes its weights otherwise than the checkpoint "
                              f"({full}: load-time conversions)")
    for name in (parts.embedding, parts.head_weight, parts.head_bias):
        if name is not None and name not in bundle.tensors:
            return None, f"transformers names or shapes its weights otherwise than the checkpoint ({name}: load-time conversions)"
    return parts, ""


def _saved_buffers(model: "nn.Module", bundle: ModelBundle) -> None:
    """Buffers the checkpoint holds (Apertus' xIELU beta and eps, a value each) as saved: a model's
    `initialize_weights` need not set them, and what it leaves is uninitialized memory."""
    for name, module in model.named_modules():
        for key, buffer in module._buffers.items():
            ref = bundle.tensors.get(f"{name}.{key}" if name else key)
            if buffer is not None and ref is not None and tuple(ref.shape) == tuple(buffer.shape):
                module._buffers[key] = _float32(ref).reshape(buffer.shape).to(buffer.dtype)


def unserved(bundle: ModelBundle) -> str:
    """Why the bundle's family cannot run layer-major ('' when it can)."""
    return build(bundle)[1]


def _widths(config: dict) -> tuple[int, int]:
    """(hidden, widest MLP intermediate) of a config, for memory estimates."""
    text = config.get("text_config") or config
    hidden = int(text.get("hidden_size") or text.get("n_embd") or text.get("d_model") or 1024)
    ffn = int(text.get("intermediate_size") or text.get("n_inner") or text.get("ffn_dim") or 0) or 4 * hidden
    return hidden, ffn


def per_token_bytes(config: dict) -> int:
    """Activation bytes one position keeps while its sequence waits at a module: the residual stream,
    a module's input and output, and the MLP's intermediates (float32)."""
    hidden, ffn = _widths(config)
    return 4 * (6 * hidden + 3 * ffn)


def whole_model_bytes(bundle: ModelBundle) -> int:
    """The whole-model path's estimate: every weight as float32 (transformers' loader adds about a
    quarter while it fills them), on top of the imports."""
    return BASE_BYTES + 5 * bundle.parameter_count


def largest_weight_bytes(bundle: ModelBundle, parts: Parts) -> int:
    """float32 bytes of the largest module's own weights (what one step of a pass holds), counted by
    the names of its tensors: `{module}.{param}`."""
    skip = (parts.embedding, parts.head_weight, parts.head_bias)
    sizes: dict[str, int] = {}
    for ref in bundle:
        if ref.name not in skip and ref.alias_of is None:
            module = ref.name.rpartition(".")[0]
            sizes[module] = sizes.get(module, 0) + 4 * ref.numel
    return max(sizes.values(), default=0)


class LayerwiseRuntime:
    """The Runtime interface over a bundle, run layer-major; `logits_many` is what verify feeds."""

    name = "transformers"

    def __init__(self, bundle: ModelBundle, parts: Parts, memory: int) -> None:
        self.bundle, self.parts, self.memory = bundle, parts, memory
        self.largest = largest_weight_bytes(bundle, parts)
        self.pass_count = 0
        self.tokenizer = load_tokenizer(bundle)
        model = parts.model
        _saved_buffers(model, bundle)
        self.decoder = getattr(model, parts.prefix)
        self.embedding = model.get_input_embeddings()
        self.head = _BlockedHead(bundle.tensors[parts.head_weight],
                                 bundle.tensors[parts.head_bias] if parts.head_bias else None)
        skip = {parts.embedding.rpartition(".")[0], parts.head}
        modules = _weighted(model, skip)
        self.weights = Weights(modules, bundle.tensors)
        self._turns = threading.local()
        self._baton: Baton | None = None
        for name, module in modules.items():
            module.register_forward_pre_hook(self._before(name))
            module.register_forward_hook(self._after(name))

    def _before(self, name: str):
        def hook(module, args):
            k = getattr(self._turns, "k", None)
            if k is not None:
                self._baton.hand_on(k)
            self.weights.enter(name)
        return hook

    def _after(self, name: str):
        def hook(module, args, output):
            self.weights.leave(name)
        return hook

    def _embed(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Each sequence's input embeddings from its own module, fed only the table rows the ids use."""
        used = sorted({i for ids in sequences for i in ids})
        table = torch.from_numpy(np.ascontiguousarray(_rows(self.bundle.tensors[self.parts.embedding], used)))
        where = {token: row for row, token in enumerate(used)}
        module, saved = self.embedding, (self.embedding.weight, self.embedding.padding_idx)
        module.weight, module.padding_idx = torch.nn.Parameter(table, requires_grad=False), None
        try:
            with torch.no_grad():
                return [module(torch.tensor([[where[i] for i in ids]])) for ids in sequences]
        finally:
            module.weight, module.padding_idx = saved

    def _hidden(self, sequences: list[list[int]]) -> list:
        """One pass over the weights: every sequence through the decoder, taking turns at each module."""
        embeds = self._embed(sequences)
        out: list[torch.Tensor | None] = [None] * len(sequences)
        errors: list[BaseException] = []
        self._baton = Baton(len(sequences))

        def work(k: int) -> None:
            self._turns.k = k
            self._baton.wait(k)
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[k] = self.decoder(inputs_embeds=embeds[k], use_cache=False)
            except BaseException as exc:     # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
            finally:
                embeds[k] = None
                self._baton.finish(k)

        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(sequences))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._baton = None
        self.weights.drop_all()
        if errors:
            raise errors[0]
        return out

    def logits_from(self, ids: list[int], hidden, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[positions, vocab] logits of positions [start, stop) of one sequence from its decoder output
        (`hidden_many`): the model's own causal-LM forward on those positions' hidden states, the head
        applied in vocabulary blocks."""
        stop = len(ids) if stop is None else stop
        model, replay = self.parts.model, _Replay(_positions(hidden, start, stop))
        decoder, head = getattr(model, self.parts.prefix), getattr(model, self.parts.head)
        setattr(model, self.parts.prefix, replay)
        setattr(model, self.parts.head, self.head)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model(input_ids=torch.tensor([ids[start:stop]]), use_cache=False).logits[0].float().numpy()
        finally:
            setattr(model, self.parts.prefix, decoder)
            setattr(model, self.parts.head, head)

    def rows_from(self, ids: list[int], hidden, first: int = 0, stop: int | None = None) -> LogitRows:
        """The logits of positions [first, stop) of one sequence, a block of positions at a time as a reader
        reaches them: the head is read once per block (at most BLOCK_BYTES of logits are held)."""
        step, stop = block_positions(self.vocab_size), len(ids) if stop is None else stop

        def blocks() -> Iterator[np.ndarray]:
            for start in range(first, stop, step):
                yield self.logits_from(ids, hidden, start, min(stop, start + step))
        return LogitRows(blocks, stop - first, self.vocab_size)

    def floor(self, sequences: list[list[int]]) -> tuple[int, int]:
        """(bytes every pass needs whatever its size, bytes per position of a pass): the imports, the
        largest module's weights and a row block, every sequence's decoder output kept for its logits,
        a block of positions' logits on each side (this one's and the other runtime's, rows.BLOCK_BYTES)."""
        hidden, _ = _widths(self.bundle.config)
        longest = max((len(s) for s in sequences), default=1)
        fixed = (BASE_BYTES + self.largest + min(16 << 20, self.largest) + 4 * hidden * sum(len(s) for s in sequences)
                 + 2 * min(BLOCK_BYTES, 4 * self.vocab_size * longest))
        return fixed, per_token_bytes(self.bundle.config)

    def passes(self, sequences: list[list[int]]) -> list[list[int]]:
        """Indices of the sequences each pass runs: consecutive, as many positions as `memory` leaves
        room for. A budget too small for the longest sequence alone is a usage error naming the
        smallest that works."""
        from ..core.errors import UsageError
        from ..core.sizes import human

        fixed, per_token = self.floor(sequences)
        longest = max((len(s) for s in sequences), default=1)
        if self.memory < fixed + per_token * longest:
            smallest = -(-(fixed + per_token * longest) // 100_000) * 100_000      # up to what human() shows
            raise UsageError(f"--max-memory {human(self.memory)} is too small for this model even layer-major: "
                             f"the smallest that works is {human(smallest)}")
        budget = (self.memory - fixed) // per_token
        groups: list[list[int]] = [[]]
        tokens = 0
        for k, ids in enumerate(sequences):
            if groups[-1] and tokens + len(ids) > budget:
                groups.append([])
                tokens = 0
            groups[-1].append(k)
            tokens += len(ids)
        return groups if groups[0] else []

    def hidden_many(self, sequences: list[list[int]]) -> list:
        """The decoder's output for every sequence (its last hidden state, [1, positions, hidden] float32):
        one pass over the weights per group of sequences (`passes`); what `logits_from` turns into logits."""
        hidden: list = []
        self.pass_count = 0
        for group in self.passes(sequences):
            self.pass_count += 1
            hidden.extend(self._hidden([sequences[k] for k in group]))
        return hidden

    def logits_many(self, sequences: list[list[int]]) -> Iterator[np.ndarray]:
        """[positions, vocab] logits of each sequence, in order, each made when it is asked for."""
        for ids, hidden in zip(sequences, self.hidden_many(sequences)):
            yield self.logits_from(ids, hidden)

    def logits(self, ids: list[int]) -> np.ndarray:
        return next(self.logits_many([ids]))

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """Greedy tokens by a whole pass per token (no KV cache across passes): n passes over the weights."""
        out = list(ids)
        for _ in range(n):
            out.append(int(np.argmax(self.logits(out)[-1])))
        return out[len(ids):]

    def tokenize(self, text: str) -> list[int] | None:
        return None if self.tokenizer is None else list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else str(ids)

    @property
    def vocab_size(self) -> int:
        return int(self.bundle.tensors[self.parts.head_weight].shape[0])

    @property
    def max_positions(self) -> int | None:
        text = self.bundle.config.get("text_config") or self.bundle.config
        value = text.get("max_position_embeddings") or text.get("n_positions")
        return int(value) if value else None
