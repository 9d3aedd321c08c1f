"""Released checkpoint revisions: fetched from a fake Hugging Face Hub (tests/fakehub.py), or read from a folder."""

from __future__ import annotations

import hashlib
import importlib
import json
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from layerprobe.data import hub  # noqa: E402
from layerprobe.data.hub import HubError, fetch_revision, read_folder_revision  # noqa: E402

from fakehub import commit, serve  # noqa: E402

REPO = "acme/tiny"
TEXT = {"config.json": '{"model_type": "gpt_neox"}\n', "tokenizer.json": '{"version": "1.0"}\n'}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def revision(root, name: str, *, weights: str = "single", config: bool = True):
    """A revision's folder under `root/acme/tiny/`: text files and small real weight files."""
    folder = root / REPO / name
    folder.mkdir(parents=True)
    for file, text in TEXT.items():
        if file != "config.json" or config:
            (folder / file).write_text(text)
    tensors = {"w": torch.arange(20_000, dtype=torch.float32), "b": torch.ones(3)}
    if weights == "single":
        save_file(tensors, folder / "model.safetensors")
    elif weights == "sharded":
        save_file({"w": tensors["w"]}, folder / "model-00001-of-00002.safetensors")
        save_file({"b": tensors["b"]}, folder / "model-00002-of-00002.safetensors")
        weight_map = {"w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    elif weights == "pickle":
        torch.save(tensors, folder / "pytorch_model.bin")
    return folder


@pytest.fixture
def fakehub(tmp_path, monkeypatch):
    """A running fake hub over tmp_path/hub, with huggingface_hub kept off ~ and out of offline mode."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import from the environment
    (tmp_path / "hub").mkdir()
    with serve(tmp_path / "hub") as server:
        yield server


def fetch(server, name, dest, **kwargs):
    return fetch_revision(REPO, name, dest, endpoint=server.endpoint, token=False, **kwargs)


def test_fetch_verifies_and_a_second_fetch_downloads_nothing(fakehub, tmp_path):
    served = revision(fakehub.root, "step1000")
    dest = tmp_path / "data" / "step1000"
    marker = fetch(fakehub, "step1000", dest)
    names = ["config.json", "model.safetensors", "tokenizer.json"]
    assert marker == {
        "repo": REPO,
        "revision": "step1000",
        "commit": commit(REPO, "step1000"),
        "weights": "safetensors",
        "files": {name: sha256(served / name) for name in names},
    }
    assert json.loads((dest / hub.MARKER).read_text()) == marker
    assert sorted(p.name for p in dest.iterdir()) == sorted([*names, hub.MARKER])  # no partial folder left
    assert all((dest / hub.MARKER).stat().st_mtime_ns >= (dest / name).stat().st_mtime_ns for name in names)
    assert [fakehub.downloads(name) for name in names] == [1, 1, 1]
    before = sum(fakehub.requests.values())
    assert fetch(fakehub, "step1000", dest) == marker
    assert sum(fakehub.requests.values()) == before  # no request at all, let alone a download


def test_fetch_by_commit_and_a_stale_marker(fakehub, tmp_path):
    revision(fakehub.root, "step1000")
    dest = tmp_path / "dest"
    sha = commit(REPO, "step1000")
    assert fetch(fakehub, sha, dest)["commit"] == sha
    (dest / "tokenizer.json").write_text("edited")  # the marker no longer vouches for the folder
    assert fetch(fakehub, sha, dest)["files"]["tokenizer.json"] == sha256(
        fakehub.root / REPO / "step1000" / "tokenizer.json"
    )
    assert fakehub.downloads("tokenizer.json") == 2 and fakehub.downloads("model.safetensors") == 1


def test_sharded_safetensors(fakehub, tmp_path):
    served = revision(fakehub.root, "step2000", weights="sharded")
    marker = fetch(fakehub, "step2000", tmp_path / "dest")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert list(marker["files"]) == ["config.json", "model.safetensors.index.json", *shards, "tokenizer.json"]
    assert all(marker["files"][name] == sha256(served / name) for name in marker["files"])


def test_a_corrupt_index_is_a_mismatch(fakehub, tmp_path):
    revision(fakehub.root, "step2000", weights="sharded")
    fakehub.faults["corrupt"].add("model.safetensors.index.json")
    with pytest.raises(HubError, match=r"'step2000': model\.safetensors\.index\.json: git blob id mismatch"):
        fetch(fakehub, "step2000", tmp_path / "dest")
    assert fakehub.downloads("model-00001-of-00002.safetensors") == 0


def test_missing_shard(fakehub, tmp_path):
    revision(fakehub.root, "step1", weights="sharded")
    (fakehub.root / REPO / "step1" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        HubError, match=r"acme/tiny, revision 'step1': shards listed in model\.safetensors\.index\.json"
    ):
        fetch(fakehub, "step1", tmp_path / "dest")


def test_unknown_revision_and_repository(fakehub, tmp_path):
    revision(fakehub.root, "step1000")
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'step9': the revision does not exist in the repository"):
        fetch(fakehub, "step9", tmp_path / "dest")
    with pytest.raises(HubError, match=r"^acme/other, revision 'step1000': repository not found"):
        fetch_revision("acme/other", "step1000", tmp_path / "dest", endpoint=fakehub.endpoint, token=False)
    fakehub.faults["gated"].add(REPO)
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'step1000': the repository is gated"):
        fetch(fakehub, "step1000", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_corrupt_file_is_deleted_and_named(fakehub, tmp_path):
    served = revision(fakehub.root, "step1000")
    fakehub.faults["corrupt"].add("model.safetensors")
    dest = tmp_path / "dest"
    data = (served / "model.safetensors").read_bytes()
    actual = hashlib.sha256(bytes([data[0] ^ 0xFF]) + data[1:]).hexdigest()
    expected = sha256(served / "model.safetensors")
    with pytest.raises(HubError) as caught:
        fetch(fakehub, "step1000", dest)
    assert str(caught.value) == (
        f"acme/tiny, revision 'step1000': model.safetensors: sha256 mismatch, expected {expected}, got {actual}; "
        "the download was deleted, rerun to fetch it again"
    )
    assert not (dest / "model.safetensors").exists() and not (dest / hub.MARKER).exists()
    assert not any((dest / hub.PARTIAL).iterdir())
    fakehub.faults["corrupt"].clear()
    assert fetch(fakehub, "step1000", dest)["files"]["model.safetensors"] == expected


def test_corrupt_regular_file_fails_its_git_blob_id(fakehub, tmp_path):
    revision(fakehub.root, "step1000")
    fakehub.faults["corrupt"].add("config.json")
    with pytest.raises(HubError, match=r"'step1000': config\.json: git blob id mismatch, expected [0-9a-f]{40}, got"):
        fetch(fakehub, "step1000", tmp_path / "dest")


@pytest.fixture
def small_chunks(monkeypatch):
    """http_get writes (and so can resume from) whole chunks only: 10 MiB by default, 4 KiB here."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)


def test_a_cut_transfer_is_resumed_by_huggingface_hub_itself(fakehub, tmp_path, small_chunks):
    """huggingface_hub's http_get retries a dropped connection itself (after 1 s), with a Range request."""
    served = revision(fakehub.root, "step1000")
    fakehub.faults["get"]["model.safetensors"] = [("cut", 32768)]
    marker = fetch(fakehub, "step1000", tmp_path / "dest")
    assert [r for name, r in fakehub.ranges if name == "model.safetensors"] == [None, "bytes=32768-"]
    assert marker["files"]["model.safetensors"] == sha256(served / "model.safetensors")


def test_a_cut_within_the_first_chunk_is_retried_from_the_start(fakehub, tmp_path):
    """With the default 10 MiB chunks the 30 kB received are not written: the retry asks for the whole file."""
    served = revision(fakehub.root, "step1000")
    fakehub.faults["get"]["model.safetensors"] = [("cut", 30_000)]
    marker = fetch(fakehub, "step1000", tmp_path / "dest")
    assert [r for name, r in fakehub.ranges if name == "model.safetensors"] == [None, None]
    assert marker["files"]["model.safetensors"] == sha256(served / "model.safetensors")


def test_an_interrupted_transfer_fails_and_a_rerun_resumes_it(fakehub, tmp_path, small_chunks):
    """Cut, then the resumed request refused (HTTP 503, which http_get does not retry): the rerun continues."""
    served = revision(fakehub.root, "step1000")
    fakehub.faults["get"]["model.safetensors"] = [("cut", 32768), ("status", 503)]
    dest = tmp_path / "dest"
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'step1000': model\.safetensors: .*503; rerun to resume"):
        fetch(fakehub, "step1000", dest)
    assert not (dest / "model.safetensors").exists() and not (dest / hub.MARKER).exists()
    partial = dest / hub.PARTIAL / sha256(served / "model.safetensors")
    assert partial.stat().st_size == 32768
    marker = fetch(fakehub, "step1000", dest)
    # the first request, the refused resumption, and the rerun's, which continues the partial file
    assert [r for name, r in fakehub.ranges if name == "model.safetensors"] == [None, "bytes=32768-", "bytes=32768-"]
    assert marker["files"]["model.safetensors"] == sha256(served / "model.safetensors")
    assert not (dest / hub.PARTIAL).exists()


def test_pickle_is_refused_unless_allowed(fakehub, tmp_path):
    served = revision(fakehub.root, "step1000", weights="pickle")
    dest = tmp_path / "dest"
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'step1000': only pickled weights \(pytorch_model\.bin\)"):
        fetch(fakehub, "step1000", dest)
    with pytest.raises(HubError, match=r"allow_pickle: true` in the run's `released` section"):
        fetch(fakehub, "step1000", dest)
    assert fakehub.downloads("pytorch_model.bin") == 0
    with pytest.warns(UserWarning, match=r"'step1000': using pickled weights pytorch_model\.bin"):
        marker = fetch(fakehub, "step1000", dest, allow_pickle=True)
    assert marker["weights"] == "pickle"
    assert marker["files"]["pytorch_model.bin"] == sha256(served / "pytorch_model.bin")
    with pytest.raises(HubError, match=r"only pickled weights \(pytorch_model\.bin\)"):  # fetched, still refused
        fetch(fakehub, "step1000", dest)
    with pytest.warns(UserWarning, match="pytorch_model.bin"):
        assert fetch(fakehub, "step1000", dest, allow_pickle=True) == marker
    assert fakehub.downloads("pytorch_model.bin") == 1


def test_no_config_or_no_weights(fakehub, tmp_path):
    revision(fakehub.root, "noconfig", config=False)
    revision(fakehub.root, "noweights", weights="none")
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'noconfig': config\.json is missing"):
        fetch(fakehub, "noconfig", tmp_path / "a")
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'noweights': no weights: none of model\.safetensors"):
        fetch(fakehub, "noweights", tmp_path / "b")


def test_network_failure(tmp_path):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(HubError, match=r"^acme/tiny, revision 'step1': network failure .*ConnectError.*rerun to retry"):
        fetch_revision(REPO, "step1", tmp_path / "dest", endpoint=endpoint, token=False)


def test_the_fake_hub_serves_hf_hub_download(fakehub, tmp_path):
    """The HEAD and GET /resolve/ answers are what hf_hub_download needs, errors included."""
    from huggingface_hub import errors, hf_hub_download

    served = revision(fakehub.root, "step1000")
    kwargs = {"revision": "step1000", "local_dir": tmp_path / "local", "endpoint": fakehub.endpoint, "token": False}
    for name in ["model.safetensors", "config.json"]:
        path = hf_hub_download(REPO, name, **kwargs)
        assert sha256(Path(path)) == sha256(served / name)
    assert fakehub.requests[("HEAD", f"/{REPO}/resolve/step1000/model.safetensors")] == 1
    with pytest.raises(errors.RemoteEntryNotFoundError):
        hf_hub_download(REPO, "absent.json", **kwargs)
    with pytest.raises(errors.RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", **kwargs | {"revision": "step9"})
    # a fresh local_dir: hf_hub_download answers RepoNotFound with a file already in local_dir by using that file
    with pytest.raises(errors.RepositoryNotFoundError):
        hf_hub_download("acme/other", "config.json", **kwargs | {"local_dir": tmp_path / "other"})
    assert not (tmp_path / "other" / "config.json").exists()


def test_read_folder_revision(tmp_path):
    served = revision(tmp_path, "step1000")
    revision(tmp_path, "step2000", weights="pickle")
    folder = tmp_path / REPO
    before = sorted(folder.rglob("*"))
    assert read_folder_revision(folder, "step1000") == {
        "repo": None,
        "revision": "step1000",
        "commit": None,
        "weights": "safetensors",
        "files": {name: sha256(served / name) for name in ["config.json", "model.safetensors", "tokenizer.json"]},
    }
    assert sorted(folder.rglob("*")) == before  # nothing written into the user's folder
    with pytest.raises(HubError, match=r"revision 'step3000' not found .*; revisions present: step1000, step2000$"):
        read_folder_revision(folder, "step3000")
    with pytest.raises(
        HubError, match=r"revision 'step2000': only pickled weights \(pytorch_model\.bin\).*allow_pickle"
    ):
        read_folder_revision(folder, "step2000")
    with pytest.warns(UserWarning, match="pytorch_model.bin"):
        assert read_folder_revision(folder, "step2000", allow_pickle=True)["weights"] == "pickle"


def test_imports_without_huggingface_hub(monkeypatch, tmp_path):
    for name in [name for name in sys.modules if name == "huggingface_hub" or name.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub now raises ImportError
    monkeypatch.delitem(sys.modules, "layerprobe.data.hub")
    fresh = importlib.import_module("layerprobe.data.hub")
    with pytest.raises(ImportError, match=r'pip install "\.\[hf\]"'):
        fresh.fetch_revision(REPO, "step1000", tmp_path / "dest")
