"""Datasets for anomaly detection: MVTec AD (and any folder in its layout), BTAD, ELPV and the demo set.

Items are ``{"image": [3,H,W] float32 in [0,1], "mask": [1,H,W] float32 in {0,1},
"label": 0|1, "defect": str, "path": str}``. A data set with image labels only
has no ``"mask"`` in its items and ``has_masks`` False: ELPV (whose items add a
``"probability"``) and any MVTec-layout folder without ``ground_truth/``.
"""

from .btad import BTAD
from .cache import CachedImages
from .demo import DEMO_CATEGORIES, clean_counterpart, make_demo_dataset
from .download import MVTEC_SHA256, MVTEC_URL, DownloadError, download_mvtec
from .elpv import ELPV
from .folder import AnomalyDataset, CategoryDataset, list_categories
from .io import DatasetError
from .mvtec import MVTecAD
from .plot import show_samples

__all__ = [
    "AnomalyDataset", "BTAD", "CachedImages", "CategoryDataset", "DEMO_CATEGORIES", "DatasetError", "DownloadError", "ELPV", "MVTEC_SHA256", "MVTEC_URL",
    "MVTecAD", "clean_counterpart", "download_mvtec", "list_categories", "make_demo_dataset", "show_samples",
]
