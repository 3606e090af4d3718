"""Corpora and tokenizers: reading a text file safely, splitting it, and turning it into ids.

- `char`: the UTF-8 bytes of the text (vocab 256; one token per ASCII character).
- `bpe`: byte-level BPE (GPT-2 style pre-tokenization) trained locally with the Hugging Face
  `tokenizers` library on the *train* part of the corpus only, so the held-out text never
  shapes the vocabulary. Cached in `cache_dir/tokenizers/` by (train text hash, vocab_size).

The held-out split is the last `eval_frac` of the file's characters, so the eval text is one
contiguous passage the train text never overlaps.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling_db.errors import DataError
from scaling_db.spec.data import resolve_corpus_path
from scaling_db.workspace import atomic_write_bytes

#: Bump when tokenizer training or encoding changes, so caches are rebuilt.
TOKENIZER_FORMAT = 1


@dataclass(frozen=True)
class Corpus:
    path: Path
    text: str
    sha256: str

    def split(self, eval_frac: float) -> tuple[str, str]:
        """(train text, eval text): the eval part is the last `eval_frac` of the characters."""
        cut = int(len(self.text) * (1.0 - eval_frac))
        train, held = self.text[:cut], self.text[cut:]
        if not train or not held:
            raise DataError(
                f"{self.path}: corpus too short to split ({len(self.text)} characters; eval_frac "
                f"{eval_frac:g} leaves an empty {'train' if not train else 'eval'} part). Use a longer corpus."
            )
        return train, held


def load_corpus(corpus: str, base_dir: Path) -> Corpus:
    """Read a UTF-8 text corpus; DataError for a missing, empty, binary or non-UTF-8 file."""
    path = resolve_corpus_path(corpus, base_dir)
    if not path.exists():
        raise DataError(
            f"{path}: corpus file does not exist. Check `data.corpus` "
            "(relative paths start at the spec file's folder)."
        )
    if not path.is_file():
        raise DataError(f"{path}: corpus is not a file. Give the path of a UTF-8 text file.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: corpus is empty. Give a UTF-8 text file with some text.")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: not a text file (NUL byte at offset {nul}). A corpus must be UTF-8 text.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}). Re-encode the file as UTF-8."
        ) from None
    return Corpus(path=path, text=text, sha256=hashlib.sha256(raw).hexdigest())


class ByteTokenizer:
    """Character level: token = one UTF-8 byte."""

    vocab_size = 256
    key = "char"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_text(self, i: int) -> str:
        return self.decode([i])

    def describe(self) -> dict[str, Any]:
        return {"kind": "char", "vocab_size": 256}


class BpeTokenizer:
    """A trained byte-level BPE tokenizer (Hugging Face `tokenizers`)."""

    def __init__(self, tok: Any, key: str):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.key = key

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return self._tok.decode([int(i) for i in ids])

    def token_text(self, i: int) -> str:
        return self.decode([i])

    def describe(self) -> dict[str, Any]:
        return {"kind": "bpe", "vocab_size": self.vocab_size, "library": "tokenizers (byte-level BPE)"}


def _train_bpe(text: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # all 256 byte symbols from the start: any text encodes, and ids 0..255 are the bytes
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


def build_tokenizer(spec: Any, train_text: str, *, corpus: Corpus, cache_dir: Path | None) -> ByteTokenizer | BpeTokenizer:
    """The tokenizer of a `tokenizer:` spec section, trained on `train_text` when BPE."""
    if spec.kind == "char":
        return ByteTokenizer()
    from tokenizers import Tokenizer

    digest = hashlib.sha256(train_text.encode("utf-8")).hexdigest()[:16]
    key = f"bpe{spec.vocab_size}-{digest}-f{TOKENIZER_FORMAT}"
    path = Path(cache_dir) / "tokenizers" / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        tok = Tokenizer.from_str(path.read_text())
    else:
        tok = _train_bpe(train_text, spec.vocab_size)
        if tok.get_vocab_size() < spec.vocab_size:
            raise DataError(
                f"{corpus.path}: the corpus supports a BPE vocabulary of at most {tok.get_vocab_size()} "
                f"tokens (asked for {spec.vocab_size}). Lower `tokenizer.vocab_size` or use a larger corpus."
            )
        if path is not None:
            atomic_write_bytes(path, tok.to_str().encode())
    return BpeTokenizer(tok, key)


def encode_text(tokenizer: ByteTokenizer | BpeTokenizer, text: str, cache_dir: Path | None) -> np.ndarray:
    """Token ids of `text` as int64; BPE encodings are cached (they take ~1 s per MB)."""
    if isinstance(tokenizer, ByteTokenizer) or cache_dir is None:
        return tokenizer.encode(text)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    path = Path(cache_dir) / "tokens" / f"{digest}-{tokenizer.key}.npy"
    if path.exists():
        return np.load(path).astype(np.int64)
    ids = tokenizer.encode(text)
    buf = io.BytesIO()
    np.save(buf, ids.astype(np.uint32))
    atomic_write_bytes(path, buf.getvalue())
    return ids
