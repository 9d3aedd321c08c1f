"""Downloads with integrity, against a local HTTP server: mirrors, checksums, resume, safe extraction."""

import io
import zipfile

import pytest

from layerprobe.data import download
from layerprobe.data.download import DownloadError, UnsafeArchive, extract, fetch

from fakedata import Server, dead_url, idx_dataset, sha256, tar_bytes

DATA = idx_dataset()[0]["train_images"]  # a real gzipped IDX file, a few hundred bytes
GOOD = sha256(DATA)


@pytest.fixture
def server():
    with Server() as running:
        yield running


def test_good_file_is_placed_and_not_fetched_again(server, tmp_path):
    url = server.add("/train.gz", DATA)
    dest = fetch([url], GOOD, tmp_path / "d" / "train_images", progress=False)
    assert dest.read_bytes() == DATA and sorted(p.name for p in dest.parent.iterdir()) == ["train_images"]
    fetch([url], GOOD, dest, progress=False)
    assert len(server.requests) == 1  # already there with the right checksum: no second request


def test_corrupt_mirror_is_removed_named_and_the_next_one_used(server, tmp_path):
    bad = server.add("/bad.gz", DATA[:-1] + bytes([DATA[-1] ^ 1]))
    good = server.add("/good.gz", DATA)
    dest = fetch([bad, good], GOOD, tmp_path / "f", progress=False)
    assert dest.read_bytes() == DATA
    with pytest.raises(DownloadError) as info:
        fetch([bad], GOOD, tmp_path / "g", progress=False)
    assert bad in str(info.value) and "SHA-256" in str(info.value) and GOOD in str(info.value)
    assert list(tmp_path.glob("g*")) == []  # the bad bytes are gone, nothing looks complete


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    url = server.add("/train.gz", DATA)
    dest = tmp_path / "train_images"
    (tmp_path / "train_images.part").write_bytes(DATA[:100])
    fetch([url], GOOD, dest, progress=False)
    assert dest.read_bytes() == DATA and not (tmp_path / "train_images.part").exists()
    assert server.requests == [("/train.gz", "bytes=100-")]


def test_complete_partial_file_is_placed_without_a_request(server, tmp_path):
    url = server.add("/train.gz", DATA)
    (tmp_path / "f.part").write_bytes(DATA)  # killed between the last byte and the rename
    assert fetch([url], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA
    assert server.requests == [] and not (tmp_path / "f.part").exists()


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    url = server.add("/train.gz", DATA, ignore_range=True)
    (tmp_path / "f.part").write_bytes(DATA[:100])
    assert fetch([url], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA


def test_wrong_range_reply_starts_that_mirror_over_once_and_says_so(server, tmp_path, capsys):
    url = server.add("/train.gz", DATA, wrong_range=True)
    (tmp_path / "f.part").write_bytes(DATA[:100])
    assert fetch([url], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA
    assert server.requests == [("/train.gz", "bytes=100-"), ("/train.gz", None)]
    said = capsys.readouterr().err
    assert url in said and "byte 0" in said and "f.part" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_cut_connection_is_resumed_from_the_next_mirror(server, tmp_path):
    cut = server.add("/cut.gz", DATA, cut=150)
    good = server.add("/good.gz", DATA)
    assert fetch([cut, good], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA
    assert server.requests == [("/cut.gz", None), ("/good.gz", "bytes=150-")]


def test_complete_part_file_with_wrong_bytes_starts_over(server, tmp_path):
    url = server.add("/train.gz", DATA)
    (tmp_path / "f.part").write_bytes(b"x" * (len(DATA) + 5))  # longer than the file: 416
    assert fetch([url], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA


def test_dead_first_mirror_then_a_good_one(server, tmp_path):
    missing = server.url + "/missing.gz"  # 404
    good = server.add("/good.gz", DATA)
    assert fetch([dead_url(), missing, good], GOOD, tmp_path / "f", progress=False).read_bytes() == DATA


def test_all_mirrors_failing_is_one_error_listing_each(server, tmp_path):
    refused, missing = dead_url(), server.url + "/missing.gz"
    bad = server.add("/bad.gz", b"not it")
    with pytest.raises(DownloadError) as info:
        fetch([refused, missing, bad], GOOD, tmp_path / "f", progress=False)
    message = str(info.value)
    assert "could not download" in message and str(tmp_path / "f") in message
    lines = message.splitlines()[1:]
    assert [line.split(": ")[0].strip() for line in lines] == [refused, missing, bad]
    assert "unreachable" in lines[0] and "HTTP 404" in lines[1] and "SHA-256" in lines[2]


def test_local_file_url(tmp_path):
    source = tmp_path / "mirror" / "train.gz"
    source.parent.mkdir()
    source.write_bytes(DATA)
    assert fetch([source.as_uri()], GOOD.upper(), tmp_path / "f", progress=False).read_bytes() == DATA


def test_verify_names_the_file(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    download.verify(tmp_path / "f", GOOD)
    with pytest.raises(ValueError, match=r"f: SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        download.verify(tmp_path / "f", "0" * 64)


def test_extract_a_good_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_bytes({"top/one.bin": b"1", "top/sub/two.bin": b"22"}))
    target = extract(archive, tmp_path / "out")
    assert (target / "top/one.bin").read_bytes() == b"1" and (target / "top/sub/two.bin").read_bytes() == b"22"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "out"]  # no temporary left


@pytest.mark.parametrize(
    "members, links, culprit",
    [
        ({"ok.bin": b"1", "../evil.bin": b"x"}, None, "'../evil.bin'"),
        ({"a/../../evil.bin": b"x"}, None, "'a/../../evil.bin'"),
        ({"/tmp/evil.bin": b"x"}, None, "'/tmp/evil.bin'"),
        ({"ok.bin": b"1"}, {"link": "../../etc/passwd"}, "'link' is a link"),
        ({"ok.bin": b"1"}, {"inner": "ok.bin"}, "'inner' is a link"),
    ],
)
def test_unsafe_archive_members_are_refused_and_nothing_written(tmp_path, members, links, culprit):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "a.tar.gz"
    archive.write_bytes(tar_bytes(members, links))
    with pytest.raises(UnsafeArchive, match=culprit):
        extract(archive, work / "out" / "x")
    assert sorted(p.name for p in work.rglob("*")) == ["a.tar.gz", "out"]  # out/ empty: nothing extracted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing escaped


def test_unsafe_zip_member_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.bin", b"x")
    (tmp_path / "a.zip").write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchive, match="'../evil.bin'"):
        extract(tmp_path / "a.zip", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_not_an_archive(tmp_path):
    (tmp_path / "a").write_bytes(b"plain")
    with pytest.raises(ValueError, match="not a tar or zip archive"):
        extract(tmp_path / "a", tmp_path / "out")
