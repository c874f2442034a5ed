"""The embedded demo dataset: layout, masks, determinism, idempotence, disjoint train/test regions."""

import json

import numpy as np
import pytest
from PIL import Image

from rdtutorial.data import DEMO_CATEGORIES, DatasetError, MVTecAD, list_categories, make_demo_dataset
from rdtutorial.data import demo

SMALL = dict(image_size=32, n_train=4, n_test_good=2, n_test_defect=2, crop=64)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data")


def test_default_layout_counts_and_items(default_demo):
    root = default_demo
    assert list_categories(root) == list(DEMO_CATEGORIES)
    manifest = json.loads((root / "demo_manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["image_size"] == 128
    for name in DEMO_CATEGORIES:
        train = MVTecAD(root, name, "train", image_size=None)
        test = MVTecAD(root, name, "test", image_size=None)
        assert len(train) == 60 and len(test) == 20 + 3 * 10
        assert test.defects == sorted(("good", *demo.DEFECTS[name]))
        for i in range(0, len(test), 7):
            item = test[i]
            assert item["image"].shape == (3, 128, 128)
            assert (item["mask"].sum() > 0) == (item["label"] == 1)
        assert train[0]["image"].std(dim=(1, 2)).min() > 0.02  # a texture, not a flat colour


def test_masks_are_binary_and_named_like_mvtec(default_demo):
    masks = sorted((default_demo / "gravel/ground_truth").rglob("*_mask.png"))
    assert len(masks) == 30
    values = np.unique(np.asarray(Image.open(masks[0])))
    assert values.tolist() == [0, 255]


def test_every_defect_type_has_a_mask_of_plausible_area(default_demo):
    for name in DEMO_CATEGORIES:
        test = MVTecAD(default_demo, name, "test", image_size=None)
        for defect in demo.DEFECTS[name]:
            i = next(k for k, s in enumerate(test.samples) if s.defect == defect)
            item = test[i]
            area = item["mask"][0].bool()
            assert 0.001 < area.float().mean() < 0.25, (name, defect)


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = _files(make_demo_dataset(tmp_path / "a", seed=3, **SMALL))
    b = _files(make_demo_dataset(tmp_path / "b", seed=3, **SMALL))
    c = _files(make_demo_dataset(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_a_category_subset_matches_the_full_build(tmp_path):
    full = _files(make_demo_dataset(tmp_path / "full", **SMALL))
    grass = _files(make_demo_dataset(tmp_path / "grass", categories=("grass",), **SMALL))
    assert {k: v for k, v in full.items() if k.parts[0] == "grass"} == {
        k: v for k, v in grass.items() if k.parts[0] == "grass"
    }


def test_second_call_does_nothing_and_other_parameters_rebuild(tmp_path):
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert make_demo_dataset(tmp_path / "d", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamp
    make_demo_dataset(tmp_path / "d", **{**SMALL, "n_train": 5})
    assert len(MVTecAD(root, "brick")) == 5


def test_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/photo.png").write_bytes(b"precious")
    with pytest.raises(DatasetError, match=r"mine.*not made by make_demo_dataset"):
        make_demo_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine/photo.png").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


def test_train_and_test_come_from_disjoint_halves(tmp_path, monkeypatch):
    rows = np.repeat(np.arange(512, dtype=np.float32)[:, None] / 511, 512, axis=1)  # value = source row
    monkeypatch.setattr(demo, "_texture", lambda name: rows)
    root = make_demo_dataset(tmp_path / "rows", categories=("brick",), **SMALL)  # brick's red tint is 1.0
    train = MVTecAD(root, "brick", "train", image_size=None)
    test = MVTecAD(root, "brick", "test", image_size=None)
    good = [i for i, s in enumerate(test.samples) if s.defect == "good"]
    assert max(float(item["image"][0].max()) for item in train) <= 255 / 511 + 1 / 255
    assert min(float(test[i]["image"][0].min()) for i in good) >= 256 / 511 - 1 / 255


@pytest.mark.parametrize(
    "bad",
    [{"categories": ("marble",)}, {"image_size": 8}, {"crop": 250}, {"n_test_good": 0, "n_test_defect": 0}],
)
def test_bad_parameters_are_named(tmp_path, bad):
    with pytest.raises(ValueError, match="|".join(bad)):
        make_demo_dataset(tmp_path / "x", **{**SMALL, **bad})
