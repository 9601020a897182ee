"""`--chat-template FILE`: a Jinja2 template into tokenizer_config.json (and chat_template.jinja if the
tokenizer keeps one, as transformers 5 does); the GGUF writer takes it from there."""
from __future__ import annotations

from pathlib import Path

from ..core.bundle import ModelBundle
from ..core.errors import UsageError
from .tokenizer_files import read_config, write_config


def apply(bundle: ModelBundle, template_file: Path) -> None:
    if not template_file.is_file():
        raise UsageError("--chat-template: no such file", template_file)
    text = template_file.read_text(encoding="utf-8")
    try:
        import jinja2
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"--chat-template: not a valid Jinja2 template (line {exc.lineno}: {exc.message})",
                         template_file) from exc
    if not bundle.tokenizer_files:
        raise UsageError("--chat-template needs the model's tokenizer files (pass --base-model DIR)", bundle.source)
    config = read_config(bundle)
    config["chat_template"] = text
    write_config(bundle, config)
    if "chat_template.jinja" in bundle.tokenizer_files:
        bundle.tokenizer_files["chat_template.jinja"].write_text(text, encoding="utf-8")
    bundle.notes.append(f"chat template set from {template_file.name}")
