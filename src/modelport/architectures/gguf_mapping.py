"""What a family needs to become GGUF, as data: llama.cpp's arch, tensor transforms, metadata.

Tensor names come from gguf-py's TensorNameMap for the arch; a family only states what differs:
Q/K rows permuted for llama.cpp's interleaved rope, GPT-2's Conv1D (in, out) weights transposed,
Gemma's norms stored as (1 + w), tensors llama.cpp does not use, and metadata keys beyond the common
decoder set. Metadata functions receive gguf-py's writer and the normalized hyper-parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np
    from gguf import GGUFWriter

    from .hparams import HParams

MetadataFn = Callable[["GGUFWriter", "HParams"], None]


@dataclass(frozen=True)
class GGUFMapping:
    arch: str                                   # gguf.MODEL_ARCH member name, e.g. "LLAMA"
    metadata: MetadataFn
    permute_qk: bool = False
    transpose: tuple[str, ...] = ()             # HF name suffixes whose 2-D weight is stored transposed
    norm_offset: float = 0.0                    # added to every "*norm.weight"
    skip: tuple[str, ...] = ()                  # HF name suffixes llama.cpp has no use for
    extra_tensors: Callable[["HParams"], dict[str, "np.ndarray"]] | None = None

    def permuted_heads(self, name: str, hp: "HParams") -> int | None:
        """How many heads' rows an HF tensor holds, when its rows are permuted for llama.cpp's rope."""
        if self.permute_qk:
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                return hp.n_head
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                return hp.n_head_kv
        return None

    def to_gguf(self, name: str, tensor: "np.ndarray", hp: "HParams", full_rows: int | None = None) -> "np.ndarray":
        """GGUF's layout of an HF tensor, or of a row chunk of it holding whole heads (given the full row count)."""
        import numpy as np
        heads = self.permuted_heads(name, hp)
        if heads is not None:
            tensor = permute_rows(tensor, heads * tensor.shape[0] // (full_rows or tensor.shape[0]))
        if tensor.ndim == 2 and name.endswith(self.transpose):
            tensor = tensor.T
        if self.norm_offset and name.endswith("norm.weight"):
            tensor = tensor.astype(np.float32) + np.float32(self.norm_offset)
        return tensor

    def from_gguf(self, name: str, tensor: "np.ndarray", hp: "HParams") -> "np.ndarray":
        """The inverse of to_gguf, for a whole tensor."""
        import numpy as np
        if self.norm_offset and name.endswith("norm.weight"):
            tensor = tensor.astype(np.float32) - np.float32(self.norm_offset)
        if tensor.ndim == 2 and name.endswith(self.transpose):
            tensor = np.ascontiguousarray(tensor.T)
        heads = self.permuted_heads(name, hp)
        return unpermute_rows(tensor, heads) if heads is not None else tensor

    def gguf_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(reversed(shape)) if len(shape) == 2 and name.endswith(self.transpose) else shape


def core_metadata(w: "GGUFWriter", hp: "HParams") -> None:
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_vocab_size(hp.vocab_size)


def decoder_metadata(w: "GGUFWriter", hp: "HParams") -> None:
    """The keys every RMSNorm + rotary decoder needs (llama, mistral, qwen2/3, phi3, gemma)."""
    core_metadata(w, hp)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps if hp.rms_eps is not None else 1e-6)
    w.add_rope_dimension_count(int(hp.head_dim * hp.raw.get("partial_rotary_factor", 1.0)))
    if hp.head_dim != hp.n_embd // hp.n_head:
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)


def permute_rows(weight: "np.ndarray", n_head: int) -> "np.ndarray":
    """HF keeps each head's rotary pairs as two halves; llama.cpp's NORM rope wants them interleaved."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def unpermute_rows(weight: "np.ndarray", n_head: int) -> "np.ndarray":
    """The inverse of permute_rows: llama.cpp's interleaved pairs back to HF's halves."""
    return (weight.reshape(n_head, weight.shape[0] // n_head // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def llama3_rope_factors(hp: "HParams") -> dict[str, "np.ndarray"]:
    """Llama 3.1's frequency-dependent rope scaling, which llama.cpp reads as `rope_freqs.weight`."""
    rope = hp.rope
    if rope.get("rope_type") != "llama3":
        return {}
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    import numpy as np
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float32) / hp.head_dim))
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return {"rope_freqs.weight": np.array(factors, dtype=np.float32)}
