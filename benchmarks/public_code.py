# Transcribed from ``compute_pro`` of the public code: first published in RD4AD
# (https://github.com/hq-deng/RD4AD, test.py), whose repository states no licence
# (none found: its licence is unknown), and carried unchanged into RD++
# (https://github.com/tientrandinh/Revisiting-Reverse-Distillation, utils/utils_test.py),
# whose licence follows. This file is a benchmark reference, not part of the package.
#
# MIT License
# Copyright (c) 2023 Tran Dinh Tien
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

"""The RD4AD/RD++ code's per-image AUPRO, transcribed as published (pandas rows replaced by lists).

The reference that ``rdtutorial.metrics.aupro_per_image`` must reproduce
(``tests/test_metrics.py``) and the baseline it is timed against
(``benchmarks/metrics.py``): 200 thresholds, every mask relabelled at every
threshold, one image at a time.
"""

from statistics import mean

import numpy as np
from skimage import measure
from sklearn.metrics import auc
from tqdm import tqdm


def public_compute_pro(masks: np.ndarray, amaps: np.ndarray, num_th: int = 200) -> float:
    """RD4AD's ``compute_pro`` on masks [N, H, W] in {0, 1} and maps [N, H, W]."""
    assert set(masks.flatten()) == {0, 1}
    rows = []
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / num_th
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th] = 0
        binary_amaps[amaps > th] = 1
        pros = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                tp_pixels = binary_amap[region.coords[:, 0], region.coords[:, 1]].sum()
                pros.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fpr = np.logical_and(inverse_masks, binary_amaps).sum() / inverse_masks.sum()
        rows.append((mean(pros), fpr))
    pro, fpr = np.array(rows).T
    keep = fpr < 0.3
    return auc(fpr[keep] / fpr[keep].max(), pro[keep])


def public_aupro_per_image(maps: np.ndarray, masks: np.ndarray, progress: bool = False) -> float:
    """The public evaluation: ``compute_pro`` on each defective image (float64 maps, as there), then the mean."""
    defective = [i for i in range(len(maps)) if masks[i].any()]
    return float(np.mean([
        public_compute_pro(masks[i][None], maps[i][None].astype(np.float64))
        for i in tqdm(defective, desc="public per-image loop", disable=not progress)
    ]))
