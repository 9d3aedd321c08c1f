"""Format readers on generated files in the real formats: idx, cifar pickle batches, image folders."""

import pickle

import numpy as np
import pytest
import torch
import yaml

from layerprobe.config import datasets
from layerprobe.data import formats
from layerprobe.data.dataset import channel_stats
from layerprobe.data.prepare import _with_defaults, prepare

from conftest import SCHEMA
from fakedata import Server, cifar_batch, idx_bytes, idx_dataset, sha256, tar_bytes


def idx_declaration(files: dict[str, bytes], urls: dict[str, list[str]] | None = None, **extra) -> dict:
    return {
        "format": "idx",
        "num_classes": 4,
        "files": {
            role: {"urls": (urls or {}).get(role, [f"file:///nowhere/{role}"]), "sha256": sha256(data)}
            for role, data in files.items()
        },
        **extra,
    }


def write(folder, files: dict[str, bytes]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for role, data in files.items():
        (folder / role).write_bytes(data)
    return {role: folder / role for role in files}


def test_idx_dataset_is_read_exactly(tmp_path):
    files, arrays = idx_dataset()
    data = prepare("tiny", idx_declaration(files), files=write(tmp_path, files))
    assert data.x_train.shape == (30, 1, 6, 5) and data.x_train.dtype == torch.uint8
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(data.y_test, torch.from_numpy(arrays["test_labels"]).long()) and data.y_test.dtype == torch.int64
    assert data.num_classes == 4 and data.mean == channel_stats(data.x_train)[0]
    assert abs(data.split("train")[0].mean().item()) < 1e-5  # standardized with the training statistics


def test_idx_uncompressed_transposed_and_declared_normalization(tmp_path):
    files, arrays = idx_dataset()
    raw = {role: idx_bytes(a) for role, a in arrays.items()}
    decl = idx_declaration(raw, transpose=True, normalization={"mean": [100.0], "std": [50.0]})
    data = prepare("tiny", decl, files=write(tmp_path, raw))
    assert data.x_train.shape == (30, 1, 5, 6)
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(arrays["train_images"]).transpose(1, 2))
    assert data.mean == (100.0,) and data.std == (50.0,)


def test_idx_is_downloaded_when_given_a_folder(tmp_path):
    files, _ = idx_dataset()
    with Server() as server:
        urls = {role: [server.add(f"/{role}.gz", data)] for role, data in files.items()}
        data = prepare("tiny", idx_declaration(files, urls), download_dir=tmp_path)
    assert len(data.x_test) == 12 and sorted(p.name for p in (tmp_path / "tiny").iterdir()) == sorted(files)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda f, d: f.update(train_labels=b"\0\0\x08\x01" + b"\0\0\0\x05" + bytes(5)), "30 images but 5 labels"),
        (lambda f, d: f.update(test_images=b"PK\x03\x04 not idx"), "test_images: not an IDX file"),
        (lambda f, d: f.update(train_images=idx_bytes(np.zeros((4, 6, 5), np.uint8))[:-3]), "need 120 bytes"),
        (lambda f, d: d.update(num_classes=3), r"train labels span 0..3, outside 0..2 \(num_classes: 3\)"),
        (
            lambda f, d: d.update(normalization={"mean": [1.0, 2.0], "std": [1.0, 1.0]}),
            "2 means and 2 stds for images with 1",
        ),
    ],
)
def test_bad_idx_input_is_named(tmp_path, edit, expected):
    files, _ = idx_dataset()
    decl = idx_declaration(files)
    edit(files, decl)
    decl["files"] = idx_declaration(files)["files"]  # checksums of the edited files
    with pytest.raises(ValueError, match=expected):
        prepare("tiny", decl, files=write(tmp_path, files))


def test_replaced_download_is_caught_before_it_is_read(tmp_path):
    files, _ = idx_dataset()
    decl = idx_declaration(files)
    paths = write(tmp_path, files)
    paths["test_labels"].write_bytes(files["train_labels"])
    with pytest.raises(ValueError, match="test_labels: SHA-256 is"):
        prepare("tiny", decl, files=paths)


def cifar_archive(tmp_path, labels_key="labels", classes=10, extra=None):
    rng = np.random.default_rng(0)
    batches = {f"cifar-x/data_batch_{i}": cifar_batch(rng, 7, labels_key, classes) for i in (1, 2)}
    batches["cifar-x/test_batch"] = cifar_batch(rng, 5, labels_key, classes)
    archive = tmp_path / "archive"
    archive.write_bytes(tar_bytes({name: data for name, (data, _) in batches.items()} | (extra or {})))
    decl = {
        "format": "cifar",
        "num_classes": classes,
        "labels_key": labels_key,
        "train_batches": ["cifar-x/data_batch_1", "cifar-x/data_batch_2"],
        "test_batches": ["cifar-x/test_batch"],
        "files": {"archive": {"urls": ["file:///nowhere"], "sha256": sha256(archive.read_bytes())}},
    }
    return decl, archive, {name: batch for name, (_, batch) in batches.items()}


def test_cifar_batches_are_read_exactly(tmp_path):
    decl, archive, batches = cifar_archive(tmp_path)
    data = prepare("c10", decl, files={"archive": archive})
    assert data.x_train.shape == (14, 3, 32, 32) and data.x_test.shape == (5, 3, 32, 32)
    first = batches["cifar-x/data_batch_1"]
    assert torch.equal(data.x_train[:7].reshape(7, -1), torch.from_numpy(first["data"]))  # channel-major, as stored
    assert data.y_train[:7].tolist() == first["labels"] and len(data.mean) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive"]  # the unpacked copy is removed


def test_cifar100_fine_labels(tmp_path):
    decl, archive, batches = cifar_archive(tmp_path, labels_key="fine_labels", classes=100)
    data = prepare("c100", decl, files={"archive": archive})
    assert data.num_classes == 100 and data.y_test.tolist() == batches["cifar-x/test_batch"]["fine_labels"]


def test_cifar_missing_batch_and_wrong_labels_key_are_named(tmp_path):
    decl, archive, _ = cifar_archive(tmp_path)
    with pytest.raises(ValueError, match="no member 'cifar-x/data_batch_3'"):
        prepare("c10", {**decl, "train_batches": ["cifar-x/data_batch_3"]}, files={"archive": archive})
    with pytest.raises(ValueError, match="no 'fine_labels' entry"):
        prepare("c10", {**decl, "labels_key": "fine_labels"}, files={"archive": archive})


def test_cifar_data_that_is_not_uint8_is_refused_not_cast(tmp_path):
    floats = pickle.dumps({"data": np.full((2, 3072), 0.5), "labels": [0, 1]}, protocol=2)
    decl, archive, _ = cifar_archive(tmp_path, extra={"cifar-x/floats": floats})
    with pytest.raises(ValueError, match="expected uint8 data and integer labels, got float64"):
        prepare("c10", {**decl, "test_batches": ["cifar-x/floats"]}, files={"archive": archive})


class Boom:
    def __reduce__(self):
        return (print, ("pickle ran code",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    evil = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [Boom()]}, protocol=2)
    decl, archive, _ = cifar_archive(tmp_path, extra={"cifar-x/evil": evil})
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        prepare("c10", {**decl, "test_batches": ["cifar-x/evil"]}, files={"archive": archive})


def test_cifar_archive_served_with_an_escaping_member_is_refused(tmp_path):
    decl, archive, _ = cifar_archive(tmp_path, extra={"../../evil": b"x"})
    downloads = tmp_path / "downloads"
    with Server() as server:
        decl["files"]["archive"]["urls"] = [server.add("/cifar.tar.gz", archive.read_bytes())]
        with pytest.raises(ValueError, match="'../../evil' would be written outside"):
            prepare("c10", decl, download_dir=downloads)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "archive",
        "downloads",
        "downloads/c10",
        "downloads/c10/archive",
    ]  # downloaded, nothing unpacked


# ---- image folders (ImageNet's layout), generated with Pillow


def image_tree(root, classes=("b_cat", "a_dog"), per_class=2, broken=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (20 + 7 * i, 14 + 3 * c)  # wide and tall, different sizes
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if i % 2:
                    image.convert("L").save(folder / f"img{i}.png")  # grayscale PNG
                else:
                    image.save(folder / f"img{i}.JPEG", quality=90)
    if broken:
        (root / broken).write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def imagefolder(root, **extra):
    return {"format": "imagefolder", "num_classes": 2, "root": str(root), "image_size": 12, **extra}


def test_imagefolder_decoded_resized_and_labelled_by_sorted_folder(tmp_path):
    root = image_tree(tmp_path / "imagenet")
    data = prepare("inet", imagefolder(root), workers=2)
    assert data.x_train.shape == (4, 3, 12, 12) and data.x_train.dtype == torch.uint8
    assert data.y_train.tolist() == [0, 0, 1, 1]  # a_dog = 0, b_cat = 1
    expected = formats.load_image(root / "train" / "a_dog" / "img0.JPEG", 12)
    assert torch.equal(data.x_train[0], torch.from_numpy(expected))
    again = prepare("inet", imagefolder(root), workers=1)
    assert torch.equal(again.x_train, data.x_train)  # deterministic, whatever the number of workers


def test_resize_shorter_side_then_center_crop():
    from PIL import Image

    # 60x40 -> 30x20 (shorter side 20) -> columns 5..24 kept: of a white band on columns 0..11 of
    # the original (0..5 scaled), output columns 0..0 stay white; of columns 20..39 (10..19), 5..14.
    left, middle = np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60, 3), np.uint8)
    left[:, :12] = 255
    middle[:, 20:40] = 255
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, pixels in (("left", left), ("middle", middle)):
            Image.fromarray(pixels).save(f"{tmp}/{name}.png")
        out_left, out_middle = formats.load_image(f"{tmp}/left.png", 20), formats.load_image(f"{tmp}/middle.png", 20)
    assert out_left.shape == out_middle.shape == (3, 20, 20)
    assert out_left[:, :, 3:].max() == 0 and out_left[:, :, 0].min() > 200
    assert out_middle[:, :, 6:14].min() > 240 and out_middle[:, :, :3].max() < 15 and out_middle[:, :, 17:].max() < 15


def test_imagefolder_bad_image_fails_by_default_and_is_skipped_on_request(tmp_path):
    root = image_tree(tmp_path / "imagenet", broken="train/b_cat/broken.jpg")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot decode .*on_bad_image: skip"):
        prepare("inet", imagefolder(root))
    with pytest.warns(UserWarning, match=r"skipping .*b_cat/broken\.jpg"):
        data = prepare("inet", imagefolder(root, on_bad_image="skip"))
    assert len(data.x_train) == 4


@pytest.mark.parametrize(
    "setup, decl, expected",
    [
        (lambda r: None, {}, "root .*missing is not a folder"),
        (lambda r: image_tree(r), {"test_dir": "validation"}, r"validation: no such folder"),
        (lambda r: (image_tree(r), (r / "train" / "c_empty").mkdir()), {}, r"c_empty: class folder with no images"),
        (
            lambda r: (
                image_tree(r),
                (r / "val" / "c_new").mkdir(),
                (r / "val/a_dog/img0.JPEG").rename(r / "val/c_new/x.jpg"),
            ),
            {},
            r"different class folders \(in one only: \['c_new'\]\)",
        ),
        (lambda r: image_tree(r), {"num_classes": 1000}, "2 class folders, but num_classes is 1000"),
    ],
)
def test_bad_image_folders_are_named(tmp_path, setup, decl, expected):
    root = tmp_path / "missing"
    setup(root)
    with pytest.raises(ValueError, match=expected):
        prepare("inet", imagefolder(root, **decl))


def test_builtin_declarations_are_valid_and_the_formats_match_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["datasets"]["additionalProperties"]
    assert sorted(schema["properties"]["format"]["enum"]) == sorted(formats.READERS)
    for name, decl in datasets.BUILTIN.items():
        checked = _with_defaults(name, decl)  # raises on any schema problem
        assert set(checked.get("files", {})) == set(formats.READERS[decl["format"]][1]), name


def test_override_merges_into_a_builtin():
    merged = datasets.declarations(
        {
            "mnist": {"files": {"train_images": {"urls": ["file:///mirror/train.gz"]}}},
            "digits": {"split_seed": 3},
            "cifar10": {"format": "idx"},
        }
    )
    mnist = merged["mnist"]["files"]
    assert mnist["train_images"] == {
        "urls": ["file:///mirror/train.gz"],
        "sha256": datasets.BUILTIN["mnist"]["files"]["train_images"]["sha256"],
    }
    assert mnist["test_labels"] == datasets.BUILTIN["mnist"]["files"]["test_labels"]
    assert merged["digits"]["split_seed"] == 3 and merged["digits"]["test_fraction"] == 0.25
    assert merged["cifar10"] == {"format": "idx"}  # another format replaces the built-in
    assert datasets.BUILTIN["digits"]["split_seed"] == 0  # the built-ins themselves are untouched


def test_job_settings_drop_the_mirrors():
    settings = datasets.job_settings(datasets.BUILTIN["mnist"])
    assert settings["files"]["train_images"] == datasets.BUILTIN["mnist"]["files"]["train_images"]["sha256"]
