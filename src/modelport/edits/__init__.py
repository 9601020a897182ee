"""Training-side edits applied on the way between formats: merge a LoRA adapter, add tokens, set a chat
template, change max length.

Each edit rewrites the bundle (config, tokenizer files, vocabulary-sized tensors) before any writer
runs, so every target format gets the same edited model. Tokenizer files are rewritten into a
work folder; the sources are never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.bundle import ModelBundle


@dataclass(frozen=True)
class Edits:
    add_tokens: Path | None = None
    chat_template: Path | None = None
    max_length: int | None = None
    merge_adapter: Path | None = None        # a PEFT LoRA adapter folder, merged first (merge_adapter.py)

    def __bool__(self) -> bool:
        return bool(self.add_tokens or self.chat_template or self.max_length or self.merge_adapter)


def apply(bundle: ModelBundle, edits: Edits, workdir: Path) -> ModelBundle:
    """The edited bundle; `workdir` must outlive the writer (edited tokenizer files live there)."""
    from . import add_tokens, chat_template, max_length, merge_adapter, tokenizer_files

    if edits.merge_adapter:
        bundle = merge_adapter.apply(bundle, edits.merge_adapter)
    if not (edits.add_tokens or edits.chat_template or edits.max_length):
        return bundle
    tokenizer_files.copy_into(bundle, workdir)
    if edits.add_tokens:
        add_tokens.apply(bundle, add_tokens.load_spec(edits.add_tokens))
    if edits.chat_template:
        chat_template.apply(bundle, edits.chat_template)
    if edits.max_length:
        max_length.apply(bundle, edits.max_length)
    return bundle
