"""Running a model in transformers: HF folders through from_pretrained, any other bundle streamed in.

A source HF folder is loaded by transformers itself, so a fault in modelport's readers cannot hide on
both sides of a comparison; any other bundle (a checkpoint, DCP, GGUF, an edited model) is built from
its config on the meta device's shapes and filled one tensor at a time.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..architectures import spec_for
from ..architectures.expected import hf_config, model_class
from ..core.bundle import ModelBundle, TensorRef
from ..core.torch_arrays import to_torch
from ..storage import staged

SERIAL_LOAD = "HF_DEACTIVATE_ASYNC_LOAD"     # transformers' switch for loading one tensor at a time


class _Lazy:
    """A bundle tensor as transformers' loader reads checkpoint tensors: by slicing (`tensor[...]`), so each
    is read only when the loader reaches it."""

    def __init__(self, ref: TensorRef) -> None:
        self.ref = ref

    def __getitem__(self, index):
        return to_torch(self.ref.load())[index]


def model_from_bundle(bundle: ModelBundle):
    """A float32 eval-mode transformers model holding the bundle's tensors.

    Loaded by transformers itself from the bundle's saved-format tensors, so its renamings and fusings
    (transformers 5 stacks MoE experts, renames ViT's legacy names) apply as for a checkpoint on disk;
    its loader runs without its thread pool, which would read every tensor ahead at once.
    """
    spec = spec_for(bundle.config, bundle.source)
    lazy = {ref.name: _Lazy(ref) for ref in bundle if ref.alias_of is None}
    previous = os.environ.get(SERIAL_LOAD)
    os.environ[SERIAL_LOAD] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = model_class(spec.hf_class, bundle.config).from_pretrained(
                None, config=hf_config(bundle.config), state_dict=lazy, dtype=torch.float32)
    finally:
        if previous is None:
            os.environ.pop(SERIAL_LOAD, None)
        else:
            os.environ[SERIAL_LOAD] = previous
    return model.eval()


def model_from_folder(folder: Path, config: dict):
    """A float32 eval-mode model loaded by transformers itself from an HF folder."""
    spec = spec_for(config, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model_class(spec.hf_class, config).from_pretrained(folder, dtype=torch.float32).eval()


def load_tokenizer(bundle: ModelBundle):
    """The bundle's tokenizer as transformers loads it, or None when it has none."""
    from transformers import AutoTokenizer

    if not bundle.tokenizer_files:
        return None
    folder = next(iter(bundle.tokenizer_files.values())).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(folder)


class TransformersRuntime:
    name = "transformers"

    def __init__(self, model, tokenizer=None) -> None:
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def open(cls, bundle: ModelBundle) -> "TransformersRuntime":
        """HF folders through from_pretrained; every other source from its bundle, a quantized HF folder
        included (as what it dequantizes to: transformers' own loaders of most methods need a GPU)."""
        folder = bundle.source
        if bundle.format == "hf" and folder.is_dir() and bundle.quantization is None:
            model = model_from_folder(staged(folder), bundle.config)     # transformers opens the files itself
        else:
            model = model_from_bundle(bundle)
        return cls(model, load_tokenizer(bundle))

    @torch.no_grad()
    def logits(self, ids: list[int]) -> np.ndarray:
        out = self.model(torch.tensor([ids]))
        values = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
        return values[0].float().numpy()

    def tokenize(self, text: str) -> list[int] | None:
        return None if self.tokenizer is None else list(self.tokenizer(text)["input_ids"])

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.model.config, "vocab_size", 256))

    @property
    def max_positions(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    @torch.no_grad()
    def greedy(self, ids: list[int], n: int) -> list[int]:
        """transformers' own greedy search (EOS does not stop it early)."""
        out = self.model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=self.model.config.eos_token_id)
        return out[0, len(ids):].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else str(ids)
