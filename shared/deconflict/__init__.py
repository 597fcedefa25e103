"""deconflict — gradient conflict in multi-task and multi-exit networks, reproduced.

Layers (a lower layer never imports a higher one):

1. :mod:`deconflict.grad` — per-task gradients (Jacobians), write-back.
2. :mod:`deconflict.optim` — MTL optimizers: aggregators and loss weightings, by name.
3. :mod:`deconflict.models`, :mod:`deconflict.data` — architectures and datasets.
4. ``deconflict.methods`` — the papers' own methods (later issues).
5. ``deconflict.metrics``, ``deconflict.analysis`` — metrics and conflict instruments (later issues).
6. :mod:`deconflict.train` — the training engine.

:mod:`deconflict.errors`, :mod:`deconflict.io` and :mod:`deconflict.config` sit below all layers;
:mod:`deconflict.reporting` (helpers for notebooks) and :mod:`deconflict.experiments` sit on top.
"""

__version__ = "0.1.0"
