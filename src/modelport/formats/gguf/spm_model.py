"""A SentencePiece `tokenizer.model` made from a GGUF's "llama" vocabulary, for the HF folder a GGUF
becomes.

tokenizer.json alone (what transformers rebuilds) keeps no scores and no token types, so a
GGUF -> HF -> GGUF round trip would recompute both. The SentencePiece model keeps them as the file has
them: each piece with its score and type (SentencePiece numbers its types as GGUF does). What a
SentencePiece model cannot say is said the way llama.cpp's converter reads it from an HF folder: a
user-defined token (Gemma's whitespace runs, written with literal spaces) and a control token at the
unknown id (SentencePiece needs that piece typed UNKNOWN) are listed in tokenizer_config.json's
`added_tokens_decoder`, user-defined as not special, control as special.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from gguf import TokenType

from .header import GGUFHeader

log = logging.getLogger("modelport")


def write(header: GGUFHeader, folder: Path) -> bool:
    """Write folder/tokenizer.model and the added tokens into folder/tokenizer_config.json; False (and
    nothing written) when SentencePiece cannot hold this vocabulary."""
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = header.get("tokenizer.ggml.tokens") or []
    types = header.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
    scores = header.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    unk = header.get("tokenizer.ggml.unknown_token_id")
    model = pb.ModelProto()
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = TokenType.BYTE in types
    model.trainer_spec.unk_id = unk if isinstance(unk, int) else -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = bool(header.get("tokenizer.ggml.add_space_prefix", True))
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    added = {}
    for index, (token, kind, score) in enumerate(zip(tokens, types, scores)):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = token, score, kind
        if index == unk and kind != TokenType.UNKNOWN:
            piece.type = TokenType.UNKNOWN
            added[str(index)] = _added(token, kind == TokenType.CONTROL)
        elif kind == TokenType.USER_DEFINED:
            piece.piece = token.replace(" ", "\u2581")
            added[str(index)] = _added(token, False)
    data = model.SerializeToString()
    try:
        SentencePieceProcessor().LoadFromSerializedProto(data)
    except RuntimeError as exc:        # e.g. no unknown piece, or a piece twice: tokenizer.json alone then
        log.info("no tokenizer.model: SentencePiece cannot hold this vocabulary (%s)", exc)
        return False
    (folder / "tokenizer.model").write_bytes(data)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {**config.get("added_tokens_decoder", {}), **added}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def _added(content: str, special: bool) -> dict:
    return {"content": content, "special": special, "normalized": False, "lstrip": False, "rstrip": False,
            "single_word": False}
