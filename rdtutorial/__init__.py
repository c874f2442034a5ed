"""rdtutorial: RD++ (Revisiting Reverse Distillation, CVPR 2023) built step by step.

One concept per module: ``models`` (teacher, projections, OCBE, decoder),
``losses``, ``noise`` (simplex pseudo-anomalies), ``data``, ``anomaly_map``,
``metrics``, ``config`` and ``train``. Import what you need from there.
"""

__version__ = "0.1.0"
