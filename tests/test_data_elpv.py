"""ELPV: the stored split against the installed package's labels, the items, and the missing-package error."""

import builtins
from collections import Counter
from fractions import Fraction

import pytest
import torch
from torch.utils.data import DataLoader

from rdtutorial.data import ELPV, DatasetError
from rdtutorial.data.elpv import NUM_CELLS, SPLIT_SEED, SPLITS, make_split, read_labels, read_split

# (module type, probability) -> cells, as published for ELPV
EXPECTED = {
    ("mono", "0"): 588, ("mono", "1/3"): 117, ("mono", "2/3"): 56, ("mono", "1"): 313,
    ("poly", "0"): 920, ("poly", "1/3"): 178, ("poly", "2/3"): 50, ("poly", "1"): 402,
}
# (module type, split) -> cells in the stored split
SPLIT_SIZES = {
    ("mono", "train"): 353, ("mono", "validation"): 59 + 104, ("mono", "test"): 176 + 209, ("mono", "uncertain"): 173,
    ("poly", "train"): 552, ("poly", "validation"): 92 + 134, ("poly", "test"): 276 + 268, ("poly", "uncertain"): 228,
}


def test_package_labels_have_the_published_counts():
    labels = read_labels()
    assert len(labels) == NUM_CELLS
    assert Counter((kind, str(p)) for kind, p in labels.values()) == EXPECTED


def test_split_file_is_what_make_split_writes_and_agrees_with_the_package():
    rows = read_split()
    assert rows == make_split(read_labels(), SPLIT_SEED)
    labels = read_labels()
    assert {r["file"] for r in rows} == set(labels) and len(rows) == NUM_CELLS  # every cell exactly once
    for r in rows:
        assert labels[r["file"]] == (r["type"], Fraction(r["probability"]))
    assert Counter((r["type"], r["probability"]) for r in rows) == EXPECTED


def test_split_rule_per_module_type_and_probability():
    count = Counter((r["type"], r["probability"], r["split"]) for r in read_split())
    for kind in ELPV.CATEGORIES:
        normal = EXPECTED[kind, "0"]
        assert count[kind, "0", "train"] == round(0.6 * normal)
        assert count[kind, "0", "validation"] == round(0.1 * normal)
        assert count[kind, "0", "test"] == normal - round(0.6 * normal) - round(0.1 * normal)
        assert count[kind, "1", "validation"] == round(EXPECTED[kind, "1"] / 3)
        assert count[kind, "1", "test"] == EXPECTED[kind, "1"] - round(EXPECTED[kind, "1"] / 3)
        for p in ("1/3", "2/3"):
            assert count[kind, p, "uncertain"] == EXPECTED[kind, p]
    assert sum(count.values()) == NUM_CELLS


def test_datasets_are_disjoint_cover_every_cell_and_have_the_split_sizes():
    paths = []
    for kind in ELPV.CATEGORIES:
        for split in SPLITS:
            ds = ELPV(kind, split, image_size=32)
            assert len(ds) == SPLIT_SIZES[kind, split]
            paths += [str(s.image) for s in ds.samples]
            if split == "train":
                assert set(ds.labels) == {0} and ds.defects == ["good"]
            elif split == "uncertain":
                assert ds.defects == ["uncertain"] and sorted(set(ds.probabilities)) == [1 / 3, 2 / 3]
            else:
                assert set(ds.labels) == {0, 1} and ds.defects == ["defective", "good"]
    assert len(paths) == len(set(paths)) == NUM_CELLS


def test_items_are_grey_images_in_range_without_masks():
    ds = ELPV("poly", "test", image_size=64).subset(4)
    assert ELPV.has_masks is False
    for item in ds:
        assert set(item) == {"image", "label", "defect", "probability", "path"}
        image = item["image"]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
        assert item["label"] == int(item["probability"] == 1.0)
        assert item["defect"] == ("defective" if item["label"] else "good")
    full = ELPV("mono", "uncertain", image_size=None)[0]["image"]
    assert full.shape == (3, 300, 300)
    batch = next(iter(DataLoader(ds, batch_size=4)))  # no None to collate
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].tolist() == ds.labels


def test_bad_category_or_split_is_named():
    with pytest.raises(ValueError, match="'cells'"):
        ELPV("cells")
    with pytest.raises(ValueError, match="'val'"):
        ELPV("mono", split="val")


def test_missing_package_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_elpv(name, *args, **kwargs):
        if name == "elpv_dataset":
            raise ModuleNotFoundError("No module named 'elpv_dataset'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_elpv)
    with pytest.raises(DatasetError, match="pip install elpv-dataset"):
        ELPV("mono")
