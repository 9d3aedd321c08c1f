"""The text formats end to end: the embedded pydoc corpus, a folder corpus and LM1B's archive (generated
in its real layout and served from 127.0.0.1), each read into next-token sequences; bad corpora named."""

import pytest
import torch

from layerprobe.config import ConfigError, validate
from layerprobe.data import dataset
from layerprobe.data.download import DownloadError
from layerprobe.data.prepare import prepare

from fakedata import Server, sha256, tar_bytes

TOP = "1-billion-word-language-modeling-benchmark-r13output"
TRAIN_DIR = f"{TOP}/training-monolingual.tokenized.shuffled"
HELDOUT_DIR = f"{TOP}/heldout-monolingual.tokenized.shuffled"


def assert_next_tokens(data):
    for split in ("train", "test"):
        x, y = data.raw(split)
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape
        assert torch.equal(x[:, 1:], y[:, :-1])  # each target is the next input
        assert torch.equal(x[1:, 0], y[:-1, -1])  # consecutive windows continue the stream
        assert int(x.max()) < data.num_classes == 256


def test_the_pydoc_corpus_is_read_into_sequences_the_same_every_time(tmp_path):
    data = prepare("pydoc", {"sequence_length": 16, "max_tokens": {"train": 1600, "test": 800}})
    assert data.tokens and data.input_shape == (16,) and data.mean == data.std == ()
    assert (len(data.x_train), len(data.x_test)) == (99, 49)  # (1600 − 1) // 16, (800 − 1) // 16
    assert_next_tokens(data)
    assert torch.equal(data.normalize(data.x_test), data.x_test)  # token ids are the input as they are
    dataset.save(data, tmp_path / "a.pt")
    again = prepare("pydoc", {"sequence_length": 16, "max_tokens": {"train": 1600, "test": 800}})
    dataset.save(again, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = dataset.load(tmp_path / "a.pt")
    assert torch.equal(loaded.y_test, data.y_test) and loaded.tokens


def folder_corpus(root, documents):
    root.mkdir()
    for name, content in documents.items():
        (root / name).write_bytes(content)
    return {"format": "text", "corpus": "folder", "root": str(root), "sequence_length": 4, "test_fraction": 0.5}


def test_a_folder_corpus_splits_its_documents(tmp_path):
    docs = {f"d{i}.txt": f"document {i} says hello; ".encode() * 5 for i in range(6)}
    data = prepare("mine", folder_corpus(tmp_path / "corpus", docs))
    assert_next_tokens(data)
    train, test = (bytes(x.flatten().tolist()).decode() for x in (data.x_train, data.x_test))  # the streams
    in_train = {i for i in range(6) if f"document {i} says" in train}
    in_test = {i for i in range(6) if f"document {i} says" in test}
    assert len(in_train) == len(in_test) == 3 and not in_train & in_test  # documents, not sequences, split


@pytest.mark.parametrize(
    "documents, message",
    [
        ({"a.txt": b"caf\xe9 au lait", "b.txt": b"fine"}, r"a.txt: not UTF-8 text \(byte 3"),
        ({"a.txt": b"", "b.txt": b"  \n"}, "0 non-empty document"),
        ({"a.md": b"not a .txt"}, "no .txt documents"),
    ],
)
def test_a_bad_folder_corpus_is_named(tmp_path, documents, message):
    with pytest.raises(ValueError, match=message):
        prepare("mine", folder_corpus(tmp_path / "corpus", documents))


def test_a_corpus_too_short_for_one_sequence_is_named(tmp_path):
    decl = folder_corpus(tmp_path / "corpus", {"a.txt": b"a long enough training text", "b.txt": b"ab"})
    decl["test_fraction"] = 0.5
    with pytest.raises(ValueError, match=r"test split\): 2 tokens hold no sequence of context 4"):
        prepare("mine", {**decl, "split_seed": 1} if _test_is_long(decl) else decl)


def _test_is_long(decl):
    """Whether seed 0 puts the long document in the test split (then seed 1 puts it in train)."""
    from layerprobe.data import text

    _, test = text.split_documents([("a.txt", "x" * 27), ("b.txt", "ab")], 0.5, 0)
    return test[0][0] == "a.txt"


def lm1b_archive() -> bytes:
    train = {
        f"{TRAIN_DIR}/news.en-{i:05d}-of-00100": f"Sentence {i} of the news .\nAnd another one , {i} .\n".encode()
        for i in (2, 1)
    }
    heldout = {f"{HELDOUT_DIR}/news.en.heldout-{i:05d}-of-00050": f"Held out {i} .\n".encode() for i in range(2)}
    return tar_bytes({**train, **heldout, f"{TOP}/README": b"not a split"})


def lm1b_declaration(server, archive: bytes, **more) -> dict:
    url = server.add("/lm-benchmark/archive.tar.gz", archive)
    return {"sequence_length": 8, "files": {"archive": {"urls": [url], "sha256": sha256(archive)}}, **more}


def test_lm1b_is_downloaded_verified_and_read_in_its_real_layout(tmp_path):
    archive = lm1b_archive()
    with Server() as server:
        data = prepare("lm1b", lm1b_declaration(server, archive), download_dir=tmp_path)
    assert_next_tokens(data)
    train = bytes(data.x_train.flatten().tolist())
    assert train.startswith(b"Sentence 1 of the news .\nAnd anot")  # members in name order, one line each
    assert bytes(data.x_test.flatten().tolist()).startswith(b"Held out 0 .\nHeld out 1")


def test_lm1b_keeps_at_most_max_tokens(tmp_path):
    with Server() as server:
        decl = lm1b_declaration(server, lm1b_archive(), max_tokens={"train": 33, "test": 17})
        data = prepare("lm1b", decl, download_dir=tmp_path)
    assert (data.x_train.numel(), data.x_test.numel()) == (32, 16)


def test_a_corrupt_lm1b_download_is_refused_and_nothing_is_left(tmp_path):
    archive = lm1b_archive()
    with Server() as server:
        decl = lm1b_declaration(server, archive)
        server.files["/lm-benchmark/archive.tar.gz"] = archive[:-10] + b"0123456789"
        with pytest.raises(DownloadError, match="SHA-256"):
            prepare("lm1b", decl, download_dir=tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_an_archive_without_the_splits_members_is_named(tmp_path):
    archive = tar_bytes({f"{TOP}/README": b"no sentences"})
    with Server() as server, pytest.raises(ValueError, match=r"no member matches train_members"):
        prepare("lm1b", lm1b_declaration(server, archive), download_dir=tmp_path)


def test_a_non_utf8_lm1b_member_is_named(tmp_path):
    archive = tar_bytes(
        {
            f"{TRAIN_DIR}/news.en-00001-of-00100": b"bad \xff byte\n",
            f"{HELDOUT_DIR}/news.en.heldout-00000-of-00050": b"fine .\n",
        }
    )
    with Server() as server, pytest.raises(ValueError, match=r"news.en-00001-of-00100: not UTF-8 text \(byte 4"):
        prepare("lm1b", lm1b_declaration(server, archive), download_dir=tmp_path)


def text_run(model, **dataset):
    return {
        "datasets": {"pydoc": dataset} if dataset else {},
        "runs": [{"name": "r", "dataset": "pydoc", "model": model, "checkpoints": [1]}],
    }


@pytest.mark.parametrize(
    "config, message",
    [
        (
            text_run({"name": "transformer_lm", "width": 30, "heads": 4}),
            r"runs\[0\].model.heads: 4 heads do not divide width 30",
        ),
        (
            text_run({"name": "transformer_lm", "context": 32}, sequence_length=64),
            r"runs\[0\].model.context: the model's context of 32 tokens is shorter .* datasets.pydoc.sequence_length",
        ),
        (text_run({"name": "vit"}), r"runs\[0\].model.name: vit reads images; dataset 'pydoc' holds token sequences"),
        (
            text_run({"name": "transformer_lm"}, num_classes=512),
            r"datasets.pydoc.num_classes: 512, but the byte tokenizer.s vocabulary is 256",
        ),
        (text_run({"name": "transformer_lm"}, tokenizer="sentencepiece"), r"datasets.pydoc.tokenizer"),
        (
            {"runs": [{"name": "r", "dataset": "digits", "model": {"name": "vit", "patch": 3}, "checkpoints": [1]}]},
            r"runs\[0\].model.patch: 3 does not divide the 8×8 images of dataset 'digits'",
        ),
        (
            {"runs": [{"name": "r", "dataset": "digits", "model": {"name": "transformer_lm"}, "checkpoints": [1]}]},
            r"runs\[0\].model.name: transformer_lm reads token sequences; dataset 'digits' holds images",
        ),
    ],
)
def test_transformer_settings_that_cannot_be_built_are_named_before_training(config, message):
    with pytest.raises(ConfigError, match=message):
        validate(config)
