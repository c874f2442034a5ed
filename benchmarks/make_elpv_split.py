"""Write ``rdtutorial/data/elpv_split.csv``, the fixed ELPV split (see :mod:`rdtutorial.data.elpv`).

Run once: ``python benchmarks/make_elpv_split.py``. The split is a function of
the package's labels and ``SPLIT_SEED`` only (SHA-256 order, no random
generator); ``tests/test_data_elpv.py`` checks that the stored file is what
this script writes.
"""

import csv

from rdtutorial.data.elpv import SPLIT_FILE, SPLIT_SEED, make_split, read_labels

if __name__ == "__main__":
    rows = make_split(read_labels(), SPLIT_SEED)
    with open(SPLIT_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "type", "probability", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {SPLIT_FILE}")
