"""`--max-length N`: the model's maximum positions, in its config and its tokenizer's model_max_length.

Rotary models take any length (quality beyond the trained one is the user's call); a model with a
learned position table (GPT-2's wpe, BERT's position_embeddings) has exactly as many positions as
rows, so a different length is refused rather than written as a model transformers cannot load.
"""
from __future__ import annotations

from ..core.bundle import ModelBundle
from ..core.errors import UsageError
from .tokenizer_files import read_config, write_config

LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
LEARNED_TABLES = ("wpe.weight", "position_embeddings.weight", "embed_positions.weight")


def apply(bundle: ModelBundle, length: int) -> None:
    if length < 1:
        raise UsageError("--max-length must be a positive number of positions")
    table = next((t for t in bundle if t.name.endswith(LEARNED_TABLES)), None)
    if table is not None and table.shape[0] != length:
        raise UsageError(f"--max-length {length}: this model learns a table of {table.shape[0]} positions "
                         f"({table.name}); only that length is possible", bundle.source)
    keys = [k for k in LENGTH_KEYS if k in bundle.config] or ["max_position_embeddings"]
    for key in keys:
        bundle.config[key] = length
    if bundle.tokenizer_files:
        config = read_config(bundle)
        config["model_max_length"] = length
        write_config(bundle, config)
    bundle.notes.append(f"max length set to {length} ({', '.join(keys)})")
