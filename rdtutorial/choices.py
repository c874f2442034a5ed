"""The method's named choices and the paper's loss weights, in plain Python.

What :mod:`rdtutorial.models` and :mod:`rdtutorial.losses` implement and what
:class:`rdtutorial.config.TrainConfig` checks and defaults to, importable
without torch: the one place each of these names and numbers is written.
"""

TEACHERS = ("wide_resnet50_2", "efficientnet_lite0")
SSOT_MODES = ("pairwise", "published")

# The RD++ paper's objective: L_KD + 0.2 * (1 * L_SSOT + 0.01 * L_Recon + 0.1 * L_Con) / 1.11, L_Con margin 0.5.
PAPER_W_SSOT = 0.2 * 1.0 / 1.11
PAPER_W_RECON = 0.2 * 0.01 / 1.11
PAPER_W_CON = 0.2 * 0.1 / 1.11
PAPER_MARGIN = 0.5
