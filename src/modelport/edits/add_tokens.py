"""`--add-tokens YAML`: grow the vocabulary, set BOS/EOS/PAD/UNK, and initialize the new rows.

The file is Forgather's: named tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`) as a
string or `{token, init, if_missing}`, plus `special_tokens` and `regular_tokens` lists (the old
format is the two lists alone). Naming a token the vocabulary already has only moves the pointer;
any other token is added. New rows are the mean of the existing rows (default for BOS/EOS/UNK and
the lists) or zero (default for PAD). Every vocabulary-sized tensor grows together (input
embedding, LM head, their biases; a tied head stays tied), and config `vocab_size`, the token ids
in config and generation config, tokenizer.json and tokenizer_config.json change with them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..core.bundle import ModelBundle, TensorRef
from ..core.errors import UsageError
from ..core.settings_file import read_mapping, validated
from .tokenizer_files import read_config, write_config

Init = Literal["mean", "zero"]
NAMED = ("bos_token", "eos_token", "unk_token", "pad_token")
DEFAULT_INIT = {"pad_token": "zero"}            # everything else: mean


class NamedToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str
    init: Init | None = None
    if_missing: bool = False


class AddTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bos_token: Union[str, NamedToken, None] = None
    eos_token: Union[str, NamedToken, None] = None
    unk_token: Union[str, NamedToken, None] = None
    pad_token: Union[str, NamedToken, None] = None
    special_tokens: list[str] = []
    regular_tokens: list[str] = []

    def named(self) -> dict[str, NamedToken]:
        out = {}
        for key in NAMED:
            value = getattr(self, key)
            if value is not None:
                out[key] = NamedToken(token=value) if isinstance(value, str) else value
        return out


def load_spec(path: Path) -> AddTokens:
    return validated(AddTokens, read_mapping(path, "of tokens to add"), path)


def apply(bundle: ModelBundle, spec: AddTokens) -> None:
    from tokenizers import AddedToken, Tokenizer

    path = bundle.tokenizer_files.get("tokenizer.json")
    if path is None:
        raise UsageError("--add-tokens needs the model's tokenizer.json (a fast tokenizer; pass --base-model DIR)",
                         bundle.source)
    tokenizer = Tokenizer.from_file(str(path))
    tok_config = read_config(bundle)
    inits: dict[int, str] = {}
    added, moved = [], []

    def ensure(text: str, special: bool, init: str) -> int:
        existing = tokenizer.token_to_id(text)
        if existing is not None:
            return existing
        token = AddedToken(text, special=special, normalized=not special)
        (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([token])
        new_id = tokenizer.token_to_id(text)
        inits[new_id] = init
        added.append(text)
        _record_added(tok_config, new_id, text, special)
        return new_id

    for key, named in spec.named().items():
        current = tok_config.get(key)
        current = current.get("content") if isinstance(current, dict) else current
        if named.if_missing and current:
            continue
        was_known = tokenizer.token_to_id(named.token) is not None
        token_id = ensure(named.token, True, named.init or DEFAULT_INIT.get(key, "mean"))
        if was_known:
            moved.append(f"{key}={named.token}")
        tok_config[key] = named.token
        id_key = key.replace("_token", "_token_id")
        if key != "unk_token":
            bundle.config[id_key] = token_id
            if bundle.generation_config is not None and id_key in bundle.generation_config:
                bundle.generation_config[id_key] = token_id
    for text in spec.special_tokens:
        ensure(text, True, "mean")
        extras = tok_config.setdefault("extra_special_tokens" if "additional_special_tokens" not in tok_config
                                       else "additional_special_tokens", [])
        if isinstance(extras, list) and text not in extras:
            extras.append(text)
    for text in spec.regular_tokens:
        ensure(text, False, "mean")

    tokenizer.save(str(path))
    write_config(bundle, tok_config)
    _grow(bundle, tokenizer.get_vocab_size(with_added_tokens=True), inits)
    if added:
        bundle.notes.append(f"added {len(added)} token(s): {', '.join(added)}")
    if moved:
        bundle.notes.append(f"pointed {', '.join(moved)} at tokens already in the vocabulary")


def _record_added(tok_config: dict, token_id: int, text: str, special: bool) -> None:
    """tokenizer_config.json's own list of added tokens, kept in step where the file has one (transformers 4)."""
    decoder = tok_config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        decoder[str(token_id)] = {"content": text, "lstrip": False, "normalized": not special, "rstrip": False,
                                  "single_word": False, "special": special}


def _grow(bundle: ModelBundle, tokenizer_size: int, inits: dict[int, str]) -> None:
    """Every tensor whose first dimension is the vocabulary gets the new rows; tied copies follow."""
    rows = int(bundle.config.get("vocab_size") or 0)
    vocab_tensors = [t for t in bundle if t.shape and t.shape[0] == rows and t.alias_of is None]
    if not vocab_tensors:
        raise UsageError(f"no tensor has the config's vocab_size ({rows}) rows; cannot add tokens", bundle.source)
    new_rows = max(rows, tokenizer_size)
    if not inits and new_rows == rows:
        return
    grown = {t.name: _grown(t, new_rows, inits) for t in vocab_tensors}
    for name, ref in list(bundle.tensors.items()):
        if name in grown:
            bundle.tensors[name] = grown[name]
        elif ref.alias_of in grown:
            bundle.tensors[name] = grown[ref.alias_of].renamed(name, alias_of=ref.alias_of)
    bundle.config["vocab_size"] = new_rows


def _grown(ref: TensorRef, new_rows: int, inits: dict[int, str]) -> TensorRef:
    def load() -> np.ndarray:
        old = ref.load()
        out = np.zeros((new_rows, *old.shape[1:]), dtype=old.dtype)
        out[:old.shape[0]] = old
        mean = old.astype(np.float64).mean(0).astype(old.dtype)
        for row, init in inits.items():
            out[row] = mean if init == "mean" else 0
        return out
    return TensorRef(ref.name, (new_rows, *ref.shape[1:]), ref.dtype, load, ref.source)
