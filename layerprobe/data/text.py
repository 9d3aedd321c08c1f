"""Text corpora for sequence models: documents → tokens → fixed-length sequences.

A corpus is a list of named documents (a text format's reader, layerprobe.data.formats, finds them). Documents, not sequences, are split into train and test, so
no test sequence shares text with a training one. The byte-level tokenizer is UTF-8 itself (a
vocabulary of 256, no dependency, nothing to train or store); a released model is evaluated on the
tokens of its own tokenizer (its tokenizer.json, read with the `tokenizers` library: the hf extra). The embedded corpus is the standard
library's pydoc topics (`pydoc_data.topics`, about 0.46 M characters of real English prose and code
in 79 documents), so the default needs no download.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch

from layerprobe.base.seeds import derive_seed

BYTE_VOCABULARY = 256
SEPARATOR = b"\n\n"  # between documents: a paragraph break, so no byte is reserved for it


def embedded_documents() -> list[tuple[str, str]]:
    """The pydoc topics as (name, text) documents, in name order."""
    from pydoc_data.topics import topics

    return sorted(topics.items())


def decode(data: bytes, where: str) -> str:
    """`data` as UTF-8, strictly: a ValueError naming `where` and the first bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r})") from err


def split_documents(
    documents: list[tuple[str, str]], test_fraction: float, seed: int, where: str = "corpus"
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and test documents: ordered by a seeded hash of their names (stable across platforms and
    independent of the input order), the first ⌈test_fraction · n⌉ go to test. Both splits are non-empty."""
    texts = [(name, text) for name, text in documents if text.strip()]
    if len(texts) < 2:
        raise ValueError(f"{where}: {len(texts)} non-empty document(s); a train and a test split need at least 2")
    if not 0 < test_fraction < 1:
        raise ValueError(f"{where}: test_fraction {test_fraction} must lie strictly between 0 and 1")
    names = [name for name, _ in texts]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: document names repeat; each document needs its own name")
    ordered = sorted(texts, key=lambda d: (derive_seed("text split", seed, d[0]), d[0]))
    n_test = min(len(ordered) - 1, max(1, math.ceil(len(ordered) * test_fraction)))
    return sorted(ordered[n_test:]), sorted(ordered[:n_test])


def byte_tokens(documents: list[tuple[str, str]], separator: bytes = SEPARATOR) -> torch.Tensor:
    """The documents' UTF-8 bytes joined by `separator`, as one uint8 token array."""
    joined = separator.join(text.encode("utf-8") for _, text in documents)
    return torch.frombuffer(bytearray(joined), dtype=torch.uint8).clone()


def load_tokenizer(folder: str | Path):
    """The Hugging Face tokenizer in `folder` (its tokenizer.json; no code is run)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise ImportError('a model\'s tokenizer needs the tokenizers library: pip install ".[hf]"') from err
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no tokenizer.json (a model tokenizer is read from its tokenizer.json)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust parser's errors, whatever their type
        raise ValueError(f"{path}: not a readable tokenizer ({err})") from err


def fingerprint(folder: str | Path) -> str:
    """What fixes a tokenizer's ids (vocabulary and merges, added tokens, normalizer, pre-tokenizer), hashed:
    two tokenizer.json files that map text to the same ids have the same fingerprint."""
    path = Path(folder) / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    essence = {key: spec.get(key) for key in ("model", "added_tokens", "normalizer", "pre_tokenizer")}
    return "sha256:" + hashlib.sha256(json.dumps(essence, sort_keys=True).encode()).hexdigest()


def tokens(documents: Iterable[tuple[str, str]], tokenizer=None, limit: int | None = None) -> torch.Tensor:
    """The documents' tokens, joined by the separator's, as one int64 array of at most `limit` tokens.
    tokenizer None: bytes (= byte_tokens); else a Hugging Face tokenizer, one document at a time (so reading
    stops once `limit` tokens are there) with no special tokens added."""
    if tokenizer is None:
        return byte_tokens(list(documents))[:limit].long()
    separator = tokenizer.encode(SEPARATOR.decode(), add_special_tokens=False).ids
    ids: list[int] = []
    for i, (_, text) in enumerate(documents):
        ids += (separator if i else []) + tokenizer.encode(text, add_special_tokens=False).ids
        if limit is not None and len(ids) >= limit:
            break
    return torch.tensor(ids[:limit], dtype=torch.int64)


def sequences(tokens: torch.Tensor, context: int, where: str = "corpus") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, (N, context) int64 each: consecutive windows of context + 1
    tokens with stride `context`, so every token but the first is predicted exactly once; the tail
    shorter than a window is dropped."""
    if context < 1:
        raise ValueError(f"{where}: context {context} must be at least 1")
    n = (len(tokens) - 1) // context
    if n < 1:
        raise ValueError(f"{where}: {len(tokens)} tokens hold no sequence of context {context} (need {context + 1})")
    windows = tokens[: n * context + 1].long()
    inputs = windows[:-1].reshape(n, context)
    targets = windows[1:].reshape(n, context)
    return inputs, targets


def token_splits(
    train: torch.Tensor, test: torch.Tensor, context: int, where: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each split's token array cut into (inputs, next tokens), as a format's reader returns them."""
    out = []
    for split, tokens in (("train", train), ("test", test)):
        out += sequences(tokens, context, f"{where} ({split} split)")
    return tuple(out)
