"""Layer 5 — conflict instruments (``deconflict.analysis``).

Functions on task gradients (cosines, GDS/GMS, conflict fraction, DR-MGF's C and G,
feature-disentanglement entropy) and on their histories (S-conflict scores and rankings,
incidence of conflict, ranking similarity, loss-trend correlation). The training engine's
:class:`deconflict.train.GradientMonitor` records them during training without changing it.
"""

from deconflict.analysis.gradients import (
    conflict_fraction,
    cosine_matrix,
    drmgf_conflict_value,
    drmgf_convergence_gain,
    feature_disentanglement_entropy,
    gradient_direction_similarity,
    gradient_magnitude_similarity,
    magnitude_similarity_matrix,
    pair_indices,
)

__all__ = [
    "conflict_fraction",
    "cosine_matrix",
    "drmgf_conflict_value",
    "drmgf_convergence_gain",
    "feature_disentanglement_entropy",
    "gradient_direction_similarity",
    "gradient_magnitude_similarity",
    "magnitude_similarity_matrix",
    "pair_indices",
]
