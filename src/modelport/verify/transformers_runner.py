"""Running a model in transformers: HF folders through from_pretrained, anything else from its bundle."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .. import detect as fmt
from ..api import load, resolve_source


def load_model(path: Path, base_model: Path | None = None):
    """A float32 eval-mode transformers model for `path` (HF folder, .pth or DCP)."""
    import transformers

    resolved, kind = resolve_source(path, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == fmt.HF and resolved.is_dir():
            from transformers import AutoConfig
            config = AutoConfig.from_pretrained(resolved)
            cls = _model_class(transformers, config.to_dict())
            return cls.from_pretrained(resolved, dtype=torch.float32).eval()
        bundle = load(resolved, base_model)
        from transformers import AutoConfig
        config = AutoConfig.for_model(**bundle.config)
        cls = _model_class(transformers, bundle.config)
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
        state = {ref.name: ref.load().float() for ref in bundle}
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        return model.float().eval()


def _model_class(transformers, config: dict):
    names = [a for a in config.get("architectures") or [] if hasattr(transformers, a)]
    return getattr(transformers, names[0]) if names else transformers.AutoModelForCausalLM


@torch.no_grad()
def logits(model, ids: list[int]) -> torch.Tensor:
    """[positions, vocab] logits, or [positions, hidden] states for encoder-only models."""
    out = model(torch.tensor([ids]))
    values = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return values[0].float()


@torch.no_grad()
def transformers_greedy(model, ids: list[int], n: int) -> list[int]:
    """The next `n` tokens by argmax, one forward pass each (no sampling, no cache tricks)."""
    tokens = list(ids)
    for _ in range(n):
        tokens.append(int(logits(model, tokens)[-1].argmax()))
    return tokens[len(ids):]
