"""Text corpora: the embedded documents, the document split, byte tokens and sequences."""

import random

import pytest
import torch

from layerprobe.data import text


def test_the_embedded_corpus_is_real_english_in_named_documents():
    documents = text.embedded_documents()
    assert len(documents) > 50 and sum(len(t) for _, t in documents) > 400_000
    assert [name for name, _ in documents] == sorted(name for name, _ in documents)
    assert "the" in dict(documents)["assignment"].split()


def test_the_document_split_is_seeded_disjoint_and_order_free():
    documents = [(f"doc{i}", f"text number {i}") for i in range(20)]
    train, test = text.split_documents(documents, 0.25, seed=3)
    assert len(test) == 5 and len(train) == 15
    assert not {n for n, _ in train} & {n for n, _ in test}
    shuffled = documents[:]
    random.Random(0).shuffle(shuffled)
    assert text.split_documents(shuffled, 0.25, seed=3) == (train, test)
    assert text.split_documents(documents, 0.25, seed=4) != (train, test)


def test_a_split_keeps_both_sides_non_empty():
    train, test = text.split_documents([("a", "x"), ("b", "y")], 0.01, seed=0)
    assert len(train) == len(test) == 1
    train, test = text.split_documents([("a", "x"), ("b", "y")], 0.99, seed=0)
    assert len(train) == len(test) == 1


@pytest.mark.parametrize(
    "documents, fraction, phrase",
    [
        ([], 0.1, "0 non-empty document(s)"),
        ([("a", "  \n"), ("b", "")], 0.1, "0 non-empty document(s)"),
        ([("a", "x"), ("b", "y")], 1.0, "test_fraction 1.0"),
        ([("a", "x"), ("a", "y")], 0.5, "names repeat"),
    ],
)
def test_bad_corpora_are_named(documents, fraction, phrase):
    with pytest.raises(ValueError, match="mycorpus") as info:
        text.split_documents(documents, fraction, seed=0, where="mycorpus")
    assert phrase in str(info.value)


def test_decode_names_the_file_and_the_bad_byte():
    assert text.decode("naïve".encode(), "f.txt") == "naïve"
    with pytest.raises(ValueError, match=r"f.txt: not UTF-8 text \(byte 3: b'\\xff'\)"):
        text.decode(b"abc\xffdef", "f.txt")


def test_byte_tokens_are_the_utf8_bytes_joined_by_the_separator():
    tokens = text.byte_tokens([("a", "hé"), ("b", "z")])
    assert tokens.dtype == torch.uint8
    assert bytes(tokens.tolist()) == "hé".encode() + text.SEPARATOR + b"z"
    assert int(tokens.max()) < text.BYTE_VOCABULARY


def test_sequences_predict_every_token_after_the_first_once():
    tokens = torch.randint(0, 256, (103,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs, targets = text.sequences(tokens, 10)
    assert inputs.shape == targets.shape == (10, 10) and inputs.dtype == torch.int64
    assert torch.equal(inputs.flatten(), tokens[:100].long())
    assert torch.equal(targets.flatten(), tokens[1:101].long())
    assert torch.equal(inputs[1:, 0], targets[:-1, -1])  # a window starts where the last one's inputs ended


def test_a_corpus_too_short_for_one_sequence_is_named():
    with pytest.raises(ValueError, match="tiny: 5 tokens hold no sequence of context 8"):
        text.sequences(torch.zeros(5, dtype=torch.uint8), 8, where="tiny")
    with pytest.raises(ValueError, match="context 0"):
        text.sequences(torch.zeros(5, dtype=torch.uint8), 0)
