"""Hostile archives and images: one clear error naming the file or item, and nothing the user had is lost.

Archives that overwrite what they were not asked for, truncated archives (even
with a matching SHA-256), decompression bombs (a 48 KB PNG of 20000 x 20000
pixels) in every place images are read, and NaN or out-of-range images passed
through the Python API. Tiny settings (64 px, a few images, 1 epoch); no
network (the only address is a closed port on 127.0.0.1).
"""

import hashlib
import io
import re
import shutil
import tarfile

import pytest
from PIL import Image
from torch.utils.data import Dataset

import rdtutorial.train as train_module
from rdtutorial.cli import main
from rdtutorial.config import preset
from rdtutorial.data import CachedImages, DatasetError, DownloadError, MVTecAD, download_mvtec, make_demo_dataset
from rdtutorial.data.download import ARCHIVE_NAME

TINY = ["--image-size", "64", "--batch-size", "2", "--no-progress", "--calibration-fraction", "0"]
CLOSED_PORT = "http://127.0.0.1:9/mvtec.tar.xz"
BOMB_PIXELS = 20000 * 20000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", image_size=64, n_train=4, n_test_good=2,
                             n_test_defect=1, categories=("brick",))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A run folder (``train --epochs 1``) with brick/ trained, for predict."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data-root", str(data), "--category", "brick", "--epochs", "1", "--out-dir", str(run),
                 *TINY]) == 0
    return run


@pytest.fixture
def own_data(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy



def _error(capsys) -> str:
    """The one error line the command printed last on stderr (after any progress bars), without ``error: ``."""
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert "Traceback" not in err and last.startswith("error: ") and err.count("error: ") == 1, err
    return last.removeprefix("error: ")


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 4. downloads ------------------------------------------------------------------------------------------------------


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 60, 30)).save(buf, "PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _archive(path, top_level=()) -> str:
    """A tar.xz shaped like MVTec AD (bottle/, grid/, license.txt) plus ``top_level`` (name, bytes) files;
    returns its SHA-256."""
    with tarfile.open(path, "w:xz") as tar:
        _add(tar, "./license.txt", b"CC BY-NC-SA 4.0")
        for name, data in top_level:
            _add(tar, f"./{name}", data)
        for category in ("bottle", "grid"):
            _add(tar, f"./{category}/train/good/000.png", _png())
            _add(tar, f"./{category}/test/good/000.png", _png())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(root, category, sha256) -> int:
    return main(["download", "--root", str(root), "--category", category, "--url", CLOSED_PORT, "--sha256", sha256])


def test_an_archive_member_named_like_the_archive_or_a_users_file_overwrites_nothing(tmp_path, capsys):
    root = tmp_path / "mvtec"
    root.mkdir()
    digest = _archive(root / ARCHIVE_NAME, [(ARCHIVE_NAME, b"not the archive"), ("notes.txt", b"from the archive")])
    (root / "notes.txt").write_text("mine")
    before = _files(root)
    assert _download(root, "bottle", digest) == 0
    assert _download(root, "grid", digest) == 0  # the archive still passes its checksum
    after = _files(root)
    assert {name: after[name] for name in before} == before
    assert sorted(p.name for p in root.iterdir()) == sorted([ARCHIVE_NAME, "bottle", "grid", "license.txt",
                                                              "notes.txt"])
    assert len(MVTecAD(root, "bottle")) == len(MVTecAD(root, "grid")) == 1


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "Compressed file ended before the end-of-stream marker was reached"),
    ("not an archive", "file could not be opened successfully"),
])
def test_an_unreadable_archive_with_its_own_sha256_is_named(damage, reason, tmp_path, capsys):
    root = tmp_path / "mvtec"
    root.mkdir()
    archive = root / ARCHIVE_NAME
    _archive(archive)
    archive.write_bytes(archive.read_bytes()[:-200] if damage == "truncated" else b"not a tar archive" * 100)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    before = _files(root)
    assert _download(root, "bottle", digest) == 2
    assert _error(capsys) == (f"cannot read {archive}: {reason}. The archive is truncated or damaged: delete it "
                              "and download it again")
    assert _files(root) == before  # the archive is kept, nothing was extracted, no staging folder is left
    with pytest.raises(DownloadError, match=f"cannot read {archive}: "):
        download_mvtec(root, ["bottle"], url=CLOSED_PORT, sha256=digest)


# 5. images: decompression bombs --------------------------------------------------------------------------------------


def _bomb(path) -> None:
    """A ~48 KB PNG that decodes to 20000 x 20000 pixels."""
    Image.new("1", (20000, 20000)).save(path, format="PNG")


def _bomb_message(path) -> str:
    return (f"image {path} has {BOMB_PIXELS} pixels, more than Pillow allows ({2 * Image.MAX_IMAGE_PIXELS}; "
            "a possible decompression bomb): shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine")


@pytest.mark.parametrize("where", ["train/good/002.png", "test/good/000.png"])
def test_a_decompression_bomb_in_the_data_is_named_before_training(where, own_data, tmp_path, capsys, no_training):
    bomb = own_data / "brick" / where
    _bomb(bomb)
    assert main(["train", "--data-root", str(own_data), "--category", "brick", "--epochs", "1",
                 "--out-dir", str(tmp_path / "out"), *TINY]) == 2
    assert _error(capsys) == _bomb_message(bomb)


@pytest.mark.slow  # trains a run to predict with
def test_a_decompression_bomb_given_to_predict_is_named(finished, data, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(data / "brick" / "test" / "good", images)
    bomb = images / "bomb.png"
    _bomb(bomb)
    before = _files(images)
    assert main(["predict", str(finished / "brick"), str(images), "--out-dir", str(tmp_path / "pred"),
                 "--no-progress"]) == 2
    assert _error(capsys) == _bomb_message(bomb)
    assert _files(images) == before


def test_a_decompression_bomb_mask_is_named(own_data):
    mask = own_data / "brick" / "ground_truth" / "stain" / "000_mask.png"
    _bomb(mask)
    test = MVTecAD(own_data, "brick", "test", image_size=64)
    index = next(i for i, s in enumerate(test.samples) if s.mask == mask)
    with pytest.raises(DatasetError) as err:
        test[index]
    assert str(err.value) == _bomb_message(mask)


# 5. images: values that caching would silently change -----------------------------------------------------------


class _Spoiled(Dataset):
    """``base`` with one pixel of item ``index`` set to ``value`` (and, with ``drop_path``, items without a path)."""

    def __init__(self, base: Dataset, index: int, value: float, drop_path: bool = False):
        self.base, self.index, self.value, self.drop_path = base, index, value, drop_path

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        if i == self.index:
            item["image"] = item["image"].clone()
            item["image"][1, 3, 5] = self.value
        if self.drop_path:
            del item["path"]
        return item


def _config(data):
    return preset("demo", data_root=str(data), category="brick", image_size=64, batch_size=2, epochs=1,
                  progress=False, calibration_fraction=0)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("value, problem", [
    (float("nan"), "NaN values"),
    (float("inf"), "infinite values"),
    (-0.5, "values from -0.5 to"),  # uint8 would wrap -0.5 to 128
])
def test_a_non_finite_or_out_of_range_image_is_named_before_training(split, value, problem, data, no_training):
    sets = {s: MVTecAD(data, "brick", s, image_size=64) for s in ("train", "test")}
    path = sets[split].samples[1].image
    sets[split] = _Spoiled(sets[split], 1, value)
    with pytest.raises(DatasetError) as err:
        train_module.train(_config(data), (sets["train"], sets["test"]))
    message = str(err.value)  # "of the dataset", or "of the train set" where train() names its sets
    assert re.fullmatch(rf"item 1 of the (dataset|{split} set) \({re.escape(str(path))}\): its image has "
                        rf"{re.escape(problem)}.*; a dataset must yield images of finite values in \[0, 1\]",
                        message), message


def test_an_item_without_a_path_is_named_by_its_index_and_set(data):
    spoiled = _Spoiled(MVTecAD(data, "brick", "test", image_size=64), 0, float("nan"), drop_path=True)
    with pytest.raises(DatasetError) as err:
        CachedImages(spoiled, name="the test set")
    assert str(err.value) == ("item 0 of the test set: its image has NaN values; a dataset must yield images of "
                              "finite values in [0, 1]")
