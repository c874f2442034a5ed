"""The cached dataset: the same items and the same training batches as reading the files each epoch."""

import pytest
import torch
from torch.utils.data import DataLoader

from rdtutorial.data import CachedImages, DatasetError, MVTecAD, make_demo_dataset


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, image_size=64, n_train=10, n_test_good=3, n_test_defect=2, categories=("brick",))
    return root


@pytest.mark.parametrize("split", ["train", "test"])
def test_items_equal_the_files_at_their_own_size(demo_root, split):
    source = MVTecAD(demo_root, "brick", split=split, image_size=64)
    cache = CachedImages(source)
    assert len(cache) == len(source) and cache.uint8.dtype == torch.uint8
    for i in range(len(source)):
        want, got = source[i], cache[i]
        assert torch.equal(got["image"], want["image"]), want["path"]
        assert torch.equal(got["mask"], want["mask"]), want["path"]
        assert (got["label"], got["defect"], got["path"]) == (want["label"], want["defect"], want["path"])
    if split == "test":
        assert cache.masks.any() and 1 in cache.labels


def test_batches_equal_a_shuffling_dataloader_for_the_same_seed(demo_root):
    source = MVTecAD(demo_root, "brick", split="train", image_size=64)
    cache = CachedImages(source)
    old_gen, new_gen = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    old = DataLoader(source, batch_size=4, shuffle=True, drop_last=True, generator=old_gen)
    new = cache.batches(4, new_gen)
    assert len(new) == len(old) == 2
    seen = set()
    for _ in range(3):  # epochs: the generator carries over
        for batch, indices in zip(old, new, strict=True):
            assert torch.equal(cache.images(indices), batch["image"])
            seen.add(tuple(indices.tolist()))
        assert torch.equal(old_gen.get_state(), new_gen.get_state())
    assert len(seen) > 2  # the epochs were shuffled differently


def test_a_resized_image_is_rounded_to_8_bits(demo_root):
    source = MVTecAD(demo_root, "brick", split="train", image_size=32)
    cache = CachedImages(source)
    error = max((cache[i]["image"] - source[i]["image"]).abs().max().item() for i in range(len(source)))
    assert 0 < error <= 1 / 510 + 1e-7


def test_images_of_different_sizes_are_refused(demo_root):
    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            size = 32 if i == 0 else 64
            return {"image": torch.zeros(3, size, size), "mask": torch.zeros(1, size, size), "label": 0,
                    "defect": "good", "path": f"img{i}.png"}

    with pytest.raises(DatasetError, match="img1.png is \\(3, 64, 64\\).*\\(3, 32, 32\\)"):
        CachedImages(Mixed())
