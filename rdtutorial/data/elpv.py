"""ELPV: electroluminescence images of solar cells, read from the installed ``elpv-dataset`` package.

The data set (Buerhop-Lutz et al. 2018; Deitsch et al. 2019) holds 2,624 cells
of 300 x 300 8-bit grey pixels cut from 44 modules. Each cell carries its
module type (``mono`` or ``poly``: the two categories here) and an expert's
defect probability 0, 1/3, 2/3 or 1. Data licence CC BY-NC-SA 4.0, the
package's code Apache-2.0. The images come inside the ``elpv-dataset`` wheel
(``pip install elpv-dataset``); nothing is downloaded at run time.

The split is fixed in ``elpv_split.csv`` next to this module (columns
``file, type, probability, split``; probabilities written exactly as ``0``,
``1/3``, ``2/3``, ``1``). It was made once by :func:`make_split` (run
``python benchmarks/make_elpv_split.py``), per module type:

- p = 0 (normal): train / validation / test = 60 / 10 / 30 %;
- p = 1 (defective): validation / test = 1/3 : 2/3;
- p = 1/3 and 2/3: ``uncertain``, scored but kept out of the main AUROC.

The order inside each group is the SHA-256 of ``"<seed>:<file>"``, so the
split depends on no library's random generator, and the stored file is the
reference either way.

ELPV has image labels only: items carry no ``"mask"`` key, and datasets say so
with ``has_masks = False`` (as an MVTec-layout folder without ``ground_truth/`` does).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .folder import AnomalyDataset, Sample
from .io import DatasetError, load_image, resize_image

SPLIT_FILE = Path(__file__).with_name("elpv_split.csv")
SPLIT_SEED = 0
SPLITS = ("train", "validation", "test", "uncertain")
PROBABILITIES = (Fraction(0), Fraction(1, 3), Fraction(2, 3), Fraction(1))
NUM_CELLS = 2624


@dataclass(frozen=True)
class ELPVSample(Sample):
    """A :class:`Sample` with the cell's defect probability (0, 1/3, 2/3 or 1)."""

    probability: Fraction = Fraction(0)


def package_data_dir() -> Path:
    """The ``data`` folder of the installed ``elpv-dataset`` package (``labels.csv``, ``images/``)."""
    try:
        import elpv_dataset
    except ModuleNotFoundError as err:
        raise DatasetError(
            "the ELPV images come with the package elpv-dataset, which is not installed: pip install elpv-dataset"
        ) from err
    folder = Path(elpv_dataset.__file__).parent / "data"
    if not (folder / "labels.csv").is_file():
        raise DatasetError(
            f"{folder / 'labels.csv'} not found: reinstall the package with pip install --force-reinstall elpv-dataset"
        )
    return folder


def read_labels(data_dir: Path | None = None) -> dict[str, tuple[str, Fraction]]:
    """``{file name: (module type, probability)}`` from the package's ``labels.csv``
    (lines ``images/cell0001.png  1.0  mono``)."""
    labels_file = (data_dir or package_data_dir()) / "labels.csv"
    labels = {}
    for number, line in enumerate(labels_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            path, p, kind = line.split()
            probability = Fraction(float(p)).limit_denominator(3)
        except ValueError:
            raise DatasetError(f"{labels_file} line {number}: expected 'path probability type', got {line!r}") from None
        if probability not in PROBABILITIES or kind not in ELPV.CATEGORIES:
            raise DatasetError(f"{labels_file} line {number}: unknown probability or module type in {line!r}")
        labels[Path(path).name] = (kind, probability)
    return labels


def _order(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def make_split(labels: dict[str, tuple[str, Fraction]], seed: int = SPLIT_SEED) -> list[dict[str, str]]:
    """The split rows ``{"file", "type", "probability", "split"}`` of every cell, sorted by file.

    Per module type, normal cells (p = 0) go 60 / 10 / 30 % (rounded) to
    train / validation / test and defective ones (p = 1) 1/3 : 2/3 to
    validation / test, each group in the order of :func:`_order`; the rest
    are ``uncertain``.
    """
    split = {}
    for kind in ELPV.CATEGORIES:
        for p in PROBABILITIES:
            names = sorted((n for n, (k, q) in labels.items() if k == kind and q == p), key=lambda n: _order(n, seed))
            n = len(names)
            if p == 0:
                cuts = [("train", round(0.6 * n)), ("validation", round(0.1 * n)), ("test", n)]
            elif p == 1:
                cuts = [("validation", round(n / 3)), ("test", n)]
            else:
                cuts = [("uncertain", n)]
            start = 0
            for name_of_split, size in cuts:
                for name in names[start : start + size]:
                    split[name] = name_of_split
                start += size
    return [
        {"file": name, "type": labels[name][0], "probability": str(labels[name][1]), "split": split[name]}
        for name in sorted(labels)
    ]


def read_split(path: Path = SPLIT_FILE) -> list[dict[str, str]]:
    """The rows of the stored split file."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class ELPV(AnomalyDataset):
    """One module type of ELPV, one split of the fixed split (see the module docstring).

    ``ELPV("mono", split="test", image_size=256)[i]`` ->
    ``{"image": [3,H,W] float32 in [0,1] (grey repeated), "label": 0|1, "defect": str,
    "probability": float, "path": str}``; no ``"mask"`` (``has_masks`` is False).
    ``defect`` is ``"good"`` (p = 0), ``"defective"`` (p = 1) or ``"uncertain"``
    (p = 1/3, 2/3; label 1 when p > 1/2). The data set has no module ids, so
    cells of one module can fall in both train and test: scores may be a
    little optimistic for unseen modules.
    """

    CATEGORIES = ("mono", "poly")
    has_masks = False

    def __init__(self, category: str, split: str = "train", image_size: int | tuple[int, int] | None = 256) -> None:
        if category not in self.CATEGORIES:
            raise DatasetError(f"ELPV category must be one of {self.CATEGORIES}, got {category!r}")
        if split not in SPLITS:
            raise DatasetError(f"ELPV split must be one of {SPLITS}, got {split!r}")
        self.category, self.split = category, split
        data_dir = package_data_dir()
        labels = read_labels(data_dir)
        samples = []
        for row in read_split():
            if row["type"] != category or row["split"] != split:
                continue
            p = Fraction(row["probability"])
            if labels.get(row["file"]) != (category, p):
                raise DatasetError(
                    f"{SPLIT_FILE.name}: {row['file']} is ({category}, p = {p}) but the installed elpv-dataset "
                    f"says {labels.get(row['file'], 'nothing')}: the package's labels changed"
                )
            image = data_dir / "images" / row["file"]
            if not image.is_file():
                raise DatasetError(f"ELPV image {image} not found: pip install --force-reinstall elpv-dataset")
            defect = "good" if p == 0 else "defective" if p == 1 else "uncertain"
            samples.append(ELPVSample(image, None, int(p > Fraction(1, 2)), defect, p))
        super().__init__(samples, image_size)

    @property
    def probabilities(self) -> list[float]:
        """Defect probabilities of all items, without reading any image."""
        return [float(s.probability) for s in self.samples]

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        return {
            "image": resize_image(load_image(s.image), self.image_size),
            "label": s.label,
            "defect": s.defect,
            "probability": float(s.probability),
            "path": str(s.image),
        }
