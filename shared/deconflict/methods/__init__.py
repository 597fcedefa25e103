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
* ``fusion`` — the disentangle-and-fuse procedure DR-MGF and Meta-GF share: per epoch, one pass per
  task from the epoch's weights, then a pass that learns how to fuse the task results (an
  :class:`~deconflict.train.UpdateRule` over the epoch's batches);
* ``drmgf`` — DR-MGF (Sun et al.): task-specific routes on the shared convolutions (Eq. 5–7, 10),
  expected gradients (Eq. 9), meta-weighted fusion by the learned importance (Eq. 8), DR-avgF, and the
  pruning analysis of Fig. 14(a);
* ``metagf`` — Meta-GF (ECCV 2022): the same passes without routes, fused by meta-weights.

They sit above the training engine (layer 6), whose update rules and hooks they implement, and
below the experiment core (layer 8), which builds runs with them (``recon:``, ``sparse:``, ``strength:``,
``drmgf:`` and ``metagf:`` options of a run definition, :mod:`deconflict.experiments.surgery`).
"""

__all__ = ["connection_strength", "drmgf", "fusion", "metagf", "recon", "sparse"]
