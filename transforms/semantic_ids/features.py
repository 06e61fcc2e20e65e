"""Ranker features from Semantic IDs (2306.08121): prefix n-grams and SentencePiece pieces.

Prefix n-grams turn ``12-201-33`` into ``12``, ``12_201``, ``12_201_33`` (optionally hashed to
buckets), so a ranker can share statistics between items with a common prefix. A SentencePiece
model trained over the SID sequences learns which code runs are frequent; each item then
carries its pieces, e.g. ``["12_201", "33"]``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)
PUA_BASE = 0xF0000  # Supplementary Private Use Area-A: one character per (level, code)
PUA_SIZE = 65534


def prefix_ngrams(codes: Sequence[int]) -> list[str]:
    """``[c1, c1_c2, c1_c2_c3, ...]`` for one item's codes."""
    parts = [str(int(c)) for c in codes]
    return ["_".join(parts[: i + 1]) for i in range(len(parts))]


def hashed(tokens: Sequence[str], buckets: int) -> list[int]:
    """Stable hash of each token into ``buckets`` (the hashing trick)."""
    return [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big") % buckets
        for t in tokens
    ]


def _to_text(codes: Sequence[int], codebook_size: int) -> str:
    return "".join(chr(PUA_BASE + level * codebook_size + int(c)) for level, c in enumerate(codes))


def _to_piece(piece: str, codebook_size: int) -> str:
    codes = [(ord(ch) - PUA_BASE) % codebook_size for ch in piece if ord(ch) >= PUA_BASE]
    return "_".join(str(c) for c in codes)


def train_sentencepiece(
    sequences: Sequence[Sequence[int]], codebook_size: int, vocab_size: int
) -> bytes | None:
    """A BPE SentencePiece model over SID sequences, with ``vocab_size`` merged pieces on top
    of the single codes; None when the corpus is too small."""
    import sentencepiece as spm

    levels = len(sequences[0]) if len(sequences) else 0
    if not levels or levels * codebook_size > PUA_SIZE or len(sequences) < 2:
        return None
    distinct = len({ch for seq in sequences for ch in _to_text(seq, codebook_size)})
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([_to_text(seq, codebook_size) for seq in sequences]),
            model_writer=model,
            model_type="bpe",
            vocab_size=distinct + vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            add_dummy_prefix=False,
            split_by_unicode_script=False,
            split_by_number=False,
            max_sentencepiece_length=levels,
            bos_id=-1,
            eos_id=-1,
            minloglevel=2,
            num_threads=1,
        )
    except RuntimeError as exc:
        logger.warning("SentencePiece over SIDs skipped: %s", exc)
        return None
    return model.getvalue()


class SidPieces:
    """Encodes SID code sequences into learned pieces with a trained SentencePiece model."""

    def __init__(self, model: bytes, codebook_size: int):
        import sentencepiece as spm

        self.codebook_size = codebook_size
        self.processor = spm.SentencePieceProcessor(model_proto=model)

    def pieces(self, codes: Sequence[int]) -> list[str]:
        text = _to_text(codes, self.codebook_size)
        pieces = self.processor.encode(text, out_type=str)
        return [p for p in (_to_piece(piece, self.codebook_size) for piece in pieces) if p]
