"""Layer 7 — the papers' own methods (``deconflict.methods``), which change the model or the training
procedure rather than combine gradients.

Each gets one module here, usable on any model of the library outside the pipelines:

* ``recon`` — Recon (Shi et al., ICLR 2023): S-conflict scores per shared layer from a pre-run,
  and the model surgery that turns the top-K layers task-specific (a function model → new model,
  applied before training);
* ``sparse`` — sparse training with PSN masks: a fixed mask on the update of the shared
  parameters (an :class:`~deconflict.train.UpdateHook`);
* ``connection_strength`` — task priority (Jeong & Yoon, CVPR 2024): task-specific BN, connection
  strengths, sequential per-task steps (Phase 1) and per-channel projection (Phase 2) (an
  :class:`~deconflict.train.UpdateRule`);
* ``drmgf`` / ``metagf`` — DR-MGF and Meta-GF: routes, per-task disentanglement from w0 and
  meta-weighted fusion of the per-task updates (an :class:`~deconflict.train.UpdateRule` whose
  fusion runs at the end of an epoch).

They sit above the training engine (layer 6), whose update rules and hooks they implement, and
below the experiment core (layer 8), which builds runs with them (``recon:``, ``sparse:`` and ``strength:`` options
of a run definition, :mod:`deconflict.experiments.surgery`). Recon, sparse training and
connection strength are here; DR-MGF and Meta-GF come with the rest of the issue on the papers'
training procedures (their rows in the papers' tables say so: ``later``).
"""

__all__ = ["connection_strength", "recon", "sparse"]
