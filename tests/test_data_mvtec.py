"""MVTec-layout and BTAD datasets: items, conversions, resizing, listing, errors, workers, the sample grid."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rdtutorial.data import BTAD, DatasetError, MVTecAD, list_categories, show_samples

matplotlib.use("Agg")


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)
    return path


def _rgb(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h=40, w=60, box=(10, 20, 14, 34)):
    m = np.zeros((h, w), dtype=np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = 255
    return m


@pytest.fixture
def mvtec(tmp_path):
    """A tiny MVTec-layout tree: category 'widget' with PNG/BMP/JPEG, grayscale and RGBA images."""
    c = tmp_path / "widget"
    _save(c / "train/good/000.png", _rgb(seed=1))
    _save(c / "train/good/001.png", _rgb(seed=2)[..., 0])  # grayscale
    _save(c / "train/good/002.bmp", _rgb(seed=3))
    _save(c / "train/good/003.JPG", _rgb(seed=4))
    (c / "train/good/notes.txt").write_text("not an image: ignored")
    _save(c / "test/good/000.png", np.dstack([_rgb(seed=5), np.full((40, 60), 128, np.uint8)]))  # RGBA
    _save(c / "test/crack/000.png", _rgb(seed=6))
    _save(c / "ground_truth/crack/000_mask.png", _mask())
    _save(c / "test/crack/001.bmp", _rgb(seed=7))
    _save(c / "ground_truth/crack/001_mask.bmp", (_mask() > 0).astype(np.uint8))  # a 0/1 mask
    (tmp_path / "not_a_category").mkdir()
    return tmp_path


def test_train_items_have_the_documented_types_shapes_and_ranges(mvtec):
    ds = MVTecAD(mvtec, "widget", split="train", image_size=32)
    assert len(ds) == 4 and ds.labels == [0, 0, 0, 0]
    for item in ds:
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["mask"].shape == (1, 32, 32) and item["mask"].sum() == 0
        assert item["label"] == 0 and item["defect"] == "good" and Path(item["path"]).exists()


def test_grayscale_becomes_three_equal_channels_and_values_match_the_file(mvtec):
    ds = MVTecAD(mvtec, "widget", split="train", image_size=None)
    item = ds[1]
    raw = np.asarray(Image.open(item["path"]), dtype=np.float32) / 255
    assert item["image"].shape == (3, 40, 60)
    for ch in range(3):
        np.testing.assert_allclose(item["image"][ch].numpy(), raw, atol=1e-6)


def test_rgba_drops_alpha(mvtec):
    item = MVTecAD(mvtec, "widget", split="test", image_size=None)[0]
    raw = np.asarray(Image.open(item["path"]))[..., :3].astype(np.float32) / 255
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), raw, atol=1e-6)


def test_test_split_pairs_defect_images_with_masks_in_png_or_bmp(mvtec):
    ds = MVTecAD(mvtec, "widget", split="test", image_size=(20, 30))
    assert ds.labels == [1, 1, 0] and ds.defects == ["crack", "good"]
    for item in ds:
        assert item["image"].shape == (3, 20, 30) and item["mask"].shape == (1, 20, 30)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    crack = [ds[i] for i in range(len(ds)) if ds[i]["label"] == 1]
    expected = torch.zeros(20, 30)
    expected[5:10, 7:17] = 1  # the 40x60 box (10:20, 14:34) at half size, 0/255 and 0/1 masks alike
    for item in crack:
        assert item["defect"] == "crack"
        torch.testing.assert_close(item["mask"][0], expected)


def test_resize_is_antialiased(tmp_path):
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255
    _save(tmp_path / "s/train/good/0.png", stripes)
    small = MVTecAD(tmp_path, "s", image_size=20)[0]["image"][:, 1:-1, 1:-1]
    aliased = torch.nn.functional.interpolate(torch.tensor(stripes / 255.0)[None, None], size=20, mode="bilinear")
    assert aliased.std() > 0.2  # plain bilinear keeps the stripes as a false pattern
    assert small.std() < 0.05 and abs(small.mean() - 0.5) < 0.02


def test_mask_resize_keeps_a_downscaled_region(tmp_path):
    c = tmp_path / "c"
    _save(c / "train/good/0.png", _rgb(64, 64))
    _save(c / "test/hole/0.png", _rgb(64, 64))
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    _save(c / "ground_truth/hole/0_mask.png", m)
    mask = MVTecAD(tmp_path, "c", "test", image_size=8)[0]["mask"][0]
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1
    torch.testing.assert_close(mask, expected)


def test_list_categories_and_the_canonical_names(mvtec):
    assert list_categories(mvtec) == ["widget"]
    assert list_categories(mvtec / "absent") == []
    assert len(MVTecAD.CATEGORIES) == 15 and "metal_nut" in MVTecAD.CATEGORIES and "zipper" in MVTecAD.CATEGORIES


def test_missing_category_lists_those_present(mvtec):
    with pytest.raises(DatasetError, match=r"'bottle'.*widget"):
        MVTecAD(mvtec, "bottle")


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        MVTecAD(tmp_path / "nowhere", "bottle")


def test_empty_train_folder_is_named(tmp_path):
    (tmp_path / "c/train/good").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"c/train/good.*no PNG"):
        MVTecAD(tmp_path, "c")


def test_bad_split_and_bad_size(mvtec):
    with pytest.raises(ValueError, match="split"):
        MVTecAD(mvtec, "widget", split="val")
    with pytest.raises(ValueError, match="image_size"):
        MVTecAD(mvtec, "widget", image_size=(0, 3))


def test_defect_without_mask_names_image_and_expected_mask(mvtec):
    (mvtec / "widget/ground_truth/crack/000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"test/crack/000\.png.*ground_truth/crack/000_mask"):
        MVTecAD(mvtec, "widget", split="test")


def test_truncated_image_names_the_file(mvtec):
    path = mvtec / "widget/train/good/000.png"
    path.write_bytes(path.read_bytes()[:200])
    ds = MVTecAD(mvtec, "widget")
    with pytest.raises(DatasetError, match=r"train/good/000\.png"):
        ds[0]


def test_non_image_bytes_name_the_file(mvtec):
    (mvtec / "widget/train/good/000.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"cannot read image .*000\.png"):
        MVTecAD(mvtec, "widget")[0]


def test_mask_of_another_size_names_both_files(mvtec):
    _save(mvtec / "widget/ground_truth/crack/000_mask.png", _mask(20, 30, (1, 5, 1, 5)))
    ds = MVTecAD(mvtec, "widget", split="test")
    with pytest.raises(DatasetError, match=r"000_mask\.png is \(20, 30\).*test/crack/000\.png is \(40, 60\)"):
        ds[0]


def test_dataloader_with_workers_batches_items(mvtec):
    loader = DataLoader(MVTecAD(mvtec, "widget", "test", image_size=16), batch_size=2, num_workers=2)
    batches = list(loader)
    assert batches[0]["image"].shape == (2, 3, 16, 16) and batches[0]["mask"].shape == (2, 1, 16, 16)
    assert sum(len(b["path"]) for b in batches) == 3
    assert torch.cat([b["label"] for b in batches]).tolist() == [1, 1, 0]


@pytest.fixture
def btad(tmp_path):
    """BTAD naming: .bmp images with same-stem .png masks (01), .png with .bmp masks (03)."""
    for product, image_ext, mask_ext in (("01", "bmp", "png"), ("03", "png", "bmp")):
        p = tmp_path / product
        _save(p / f"train/ok/0000.{image_ext}", _rgb(seed=1))
        _save(p / f"train/ok/0001.{image_ext}", _rgb(seed=2))
        _save(p / f"test/ok/0000.{image_ext}", _rgb(seed=3))
        _save(p / f"test/ko/0000.{image_ext}", _rgb(seed=4))
        _save(p / f"ground_truth/ko/0000.{mask_ext}", _mask())
    return tmp_path


def test_btad_items(btad):
    assert list_categories(btad) == ["01", "03"]
    for product in ("01", "03"):
        train = BTAD(btad, product, "train", image_size=20)
        assert len(train) == 2 and train.labels == [0, 0] and train[0]["defect"] == "ok"
        test = BTAD(btad, product, "test", image_size=20)
        assert test.labels == [0, 1] and test.defects == ["ko", "ok"]
        assert test[0]["mask"].sum() == 0 and test[1]["mask"].sum() > 0
        assert test[1]["image"].shape == (3, 20, 20)


def test_btad_errors_name_what_is_missing(btad):
    with pytest.raises(DatasetError, match=r"'02'.*'01', '03'"):
        BTAD(btad, "02")
    (btad / "01/ground_truth/ko/0000.png").unlink()
    with pytest.raises(DatasetError, match=r"test/ko/0000\.bmp has no mask.*ground_truth/ko/0000"):
        BTAD(btad, "01", "test")


def test_show_samples_returns_a_figure_with_masks_drawn(mvtec):
    fig = show_samples(MVTecAD(mvtec, "widget", "test", image_size=32), n=8, ncols=2)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    assert sum(len(ax.images) for ax in axes) == 3 + 2  # each anomalous one gets a red overlay
    assert {ax.get_title() for ax in axes} == {"crack (anomalous)", "good (normal)"}
    matplotlib.pyplot.close(fig)
