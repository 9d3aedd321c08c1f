"""Dataset declarations: the built-ins (datasets.yaml beside this file) with a config's entries laid over them.

A dataset is declared, not coded: a `format` (a reader in layerprobe.data.formats), its files with
mirrors and SHA-256, `num_classes` and optionally a `normalization`.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from layerprobe.config.merge import merged

BUILTIN_FILE = Path(__file__).with_name("datasets.yaml")
BUILTIN: dict[str, dict] = yaml.safe_load(BUILTIN_FILE.read_text())


def declarations(user: dict | None) -> dict[str, dict]:
    """The built-in declarations with a config's `datasets` entries merged over them.

    An entry with a built-in's name and the same (or no) `format` overrides just the keys it gives,
    nested ones too (e.g. one file's `urls`); one with another format replaces the built-in; any
    other name is taken as it is (the schema then checks that it is complete).
    """
    out = copy.deepcopy(BUILTIN)
    for name, entry in (user or {}).items():
        base = out.get(name)
        if isinstance(entry, dict) and base is not None and entry.get("format", base["format"]) == base["format"]:
            out[name] = merged(base, entry)
        else:
            out[name] = copy.deepcopy(entry)
    for entry in out.values():  # the byte tokenizer's vocabulary goes without saying
        if (
            isinstance(entry, dict)
            and entry.get("format") in TEXT_FORMATS
            and entry.get("tokenizer", "bytes") == "bytes"
        ):
            entry.setdefault("num_classes", BYTE_VOCABULARY)
            if entry["num_classes"] is None:
                entry["num_classes"] = BYTE_VOCABULARY
    return out


def model_tokenizer(declaration: dict) -> dict | None:
    """A text dataset's model tokenizer ({repo, revision} or {folder}), or None for bytes and images."""
    tokenizer = declaration.get("tokenizer")
    return tokenizer if isinstance(tokenizer, dict) else None


def file_roles(declaration: dict) -> list[str]:
    """The roles of a declaration's downloaded files (e.g. train_images), in declaration order."""
    return list(declaration.get("files") or {})


def job_settings(declaration: dict) -> dict:
    """What shapes a prepared dataset: the declaration with each file reduced to its SHA-256, and
    without the planning hint `examples`.

    Mirrors do not change the bytes a checksum admits, so editing URLs reruns nothing.
    """
    settings = copy.deepcopy(declaration)
    settings.pop("examples", None)
    if "files" in settings:
        settings["files"] = {role: entry["sha256"].lower() for role, entry in settings["files"].items()}
    return settings


DIGITS = 1797  # scikit-learn's bundled digits
UNKNOWN_EXAMPLES = 10_000  # a split whose size a declaration does not give, for planning estimates


TEXT_FORMATS = ("text", "lm1b", "wikitext")  # formats of token sequences, not images
BYTE_VOCABULARY = 256  # the byte tokenizer's (layerprobe.data.text)
PYDOC_BYTES = 480_000  # about the embedded pydoc corpus's size in bytes, for planning estimates


def input_shape(declaration: dict) -> tuple[int, ...]:
    """The shape of one stored input, known from the declaration alone: (C, H, W) of an image (an idx
    dataset is taken to hold MNIST's 28x28 images), (T,) of a token sequence."""
    fmt = declaration["format"]
    if fmt in TEXT_FORMATS:
        return (declaration["sequence_length"],)
    if fmt == "digits":
        return (1, 8, 8)
    if fmt == "cifar":
        return (3, 32, 32)
    if fmt == "imagefolder":
        return (3, declaration["image_size"], declaration["image_size"])
    return (1, 28, 28)


def examples(declaration: dict) -> dict[str, int]:
    """How many images (or sequences) each split holds, as far as the declaration says (an estimate for planning)."""
    if declaration["format"] == "digits":
        test = math.ceil(declaration["test_fraction"] * DIGITS)  # as scikit-learn's train_test_split rounds
        return {"train": DIGITS - test, "test": test}
    if declaration["format"] == "text" and declaration["corpus"] == "pydoc" and not declaration.get("examples"):
        test = math.ceil(declaration["test_fraction"] * PYDOC_BYTES)
        tokens = {"train": PYDOC_BYTES - test, "test": test}
        limit = declaration["max_tokens"]
        return {
            split: max(1, min(n, limit[split] or n) // declaration["sequence_length"]) for split, n in tokens.items()
        }
    given = declaration.get("examples") or {}
    return {split: given.get(split, UNKNOWN_EXAMPLES) for split in ("train", "test")}
