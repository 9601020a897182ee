"""The built-in families, one module each; importing this package registers them all."""
from . import (  # noqa: F401
    bert,
    clip,
    encoders,
    gemma,
    gpt2,
    llama,
    mistral,
    phi3,
    qwen2,
    qwen3,
    t5,
    vit,
    wav2vec2,
    whisper,
)
