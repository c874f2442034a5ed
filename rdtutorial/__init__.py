"""rdtutorial: RD++ (Revisiting Reverse Distillation, CVPR 2023) built step by step.

One concept per module, in layers that import only from the ones before:

- plain Python: ``choices`` (named choices, the paper's loss weights), ``errors`` (input errors);
- numerics: ``simplex``, ``sinkhorn``, ``anomaly_map``, ``metrics``, ``safe_load``, ``paired`` (paired
  comparisons over seeds and test images);
- method: ``models`` (teacher, projections, OCBE, decoder, RD and RD++), ``losses``, ``noise``,
  ``data`` (MVTec AD, BTAD, ELPV, folders, the demo set, the download);
- engine: ``config`` (``TrainConfig``, the one source of every default), ``train``, ``evaluate``,
  ``checkpoint``, ``runs``, ``categories``, ``history``, ``diagnostics``, ``schedule``, ``cpu``,
  ``device``, ``compiling``, ``resources`` (disk and memory checks), ``baselines`` (a training-free
  reference), ``threshold``, ``calibration`` (the held-out normals and their threshold), ``export``;
- front ends: ``cli`` and ``options`` (``python -m rdtutorial``), ``predict``, ``report``,
  ``profiles`` (the notebooks' ``demo`` and ``paper`` profiles), ``animation``, ``ablation``.

Import what you need from there.
"""

__version__ = "0.1.0"
