"""Running a model in transformers: HF folders through from_pretrained, anything else from its bundle."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .. import detect as fmt
from ..api import load, resolve_source
from ..architectures import spec_for
from ..architectures.expected import build_model, model_class


def load_model(path: Path, base_model: Path | None = None):
    """A float32 eval-mode transformers model for `path` (HF folder, .pth, DCP or GGUF).

    HF folders load through transformers itself, so a fault in modelport's readers cannot hide on
    both sides; other sources stream their tensors one at a time into a freshly built model.
    """
    resolved, kind = resolve_source(path, None)
    bundle = load(resolved, base_model)
    spec = spec_for(bundle.config, resolved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == fmt.HF and resolved.is_dir():
            return model_class(spec.hf_class, bundle.config).from_pretrained(resolved, dtype=torch.float32).eval()
        model = build_model(spec.hf_class, bundle.config).float()
    targets = model.state_dict()            # views of the parameters: copying into them loads the model
    with torch.no_grad():
        for ref in bundle:
            if ref.alias_of is None:
                targets[ref.name].copy_(ref.load())
    model.tie_weights()
    return model.eval()


@torch.no_grad()
def logits(model, ids: list[int]) -> torch.Tensor:
    """[positions, vocab] logits, or [positions, hidden] states for encoder-only models."""
    out = model(torch.tensor([ids]))
    values = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return values[0].float()


@torch.no_grad()
def transformers_greedy(model, ids: list[int], n: int) -> list[int]:
    """The next `n` tokens by argmax (transformers' own greedy search; EOS does not stop it early)."""
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=model.config.eos_token_id)
    return out[0, len(ids):].tolist()
