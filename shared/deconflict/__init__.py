"""deconflict — gradient conflict in multi-task and multi-exit networks, reproduced.

Layers (a lower layer never imports a higher one; ``tests/test_project_layout.py`` checks it):

0. :mod:`deconflict.errors`, :mod:`deconflict.io`, :mod:`deconflict.config`, :mod:`deconflict.registry`,
   :mod:`deconflict.portable` — bad-input errors, atomic writes, params, profiles and plugins, registries by
   name, the smoke profile's portable numerics.
1. :mod:`deconflict.grad` — per-task gradients (Jacobians), write-back; :mod:`deconflict.metrics` —
   task metrics and Δm.
2. :mod:`deconflict.optim` — every MTL method by name; :mod:`deconflict.tasks` — tasks as objects.
3. :mod:`deconflict.models`, :mod:`deconflict.data` — architectures and datasets by name.
5. :mod:`deconflict.analysis` — conflict instruments.
6. :mod:`deconflict.train` — the training loop, update rules and hooks, callbacks.
7. :mod:`deconflict.methods` — the papers' own procedures.
8. :mod:`deconflict.experiments` — the generic experiment core and the tables of runs.
9. :mod:`deconflict.reporting` — rendered tables and figures.
"""

__version__ = "0.1.0"
