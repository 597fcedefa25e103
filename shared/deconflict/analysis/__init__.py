"""Layer 5 — conflict instruments (``deconflict.analysis``).

Functions on task gradients (:mod:`~deconflict.analysis.gradients`: cosines, GDS/GMS, conflict
fraction, DR-MGF's conflict value C per filter and convergence gain G, feature-disentanglement
entropy) and on their histories (:mod:`~deconflict.analysis.histories`: Recon's cosine distributions
and "Reduction (%)", S-conflict scores and rankings, ranking distance, incidence of conflict,
ranking similarity, C–G correlation, loss-trend correlation). The training engine's
:class:`deconflict.train.GradientMonitor` records the tables they read during training without
changing it.
"""

from deconflict.analysis.gradients import (
    conflict_fraction,
    cosine_matrix,
    drmgf_conflict_value,
    drmgf_convergence_gain,
    feature_disentanglement_entropy,
    filter_index,
    filter_inner_products,
    gradient_direction_similarity,
    gradient_magnitude_similarity,
    magnitude_similarity_matrix,
    pair_indices,
)
from deconflict.analysis.histories import (
    RECON_BINS,
    WHOLE_SHARED,
    bin_labels,
    conflict_gain_correlation,
    cosine_distribution,
    incidence_of_conflict,
    loss_trend_correlation,
    ranking_distance,
    ranking_similarity,
    s_conflict_ranking,
    s_conflict_scores,
    tail_reduction,
)

__all__ = [
    "RECON_BINS",
    "WHOLE_SHARED",
    "bin_labels",
    "conflict_fraction",
    "conflict_gain_correlation",
    "cosine_distribution",
    "cosine_matrix",
    "drmgf_conflict_value",
    "drmgf_convergence_gain",
    "feature_disentanglement_entropy",
    "filter_index",
    "filter_inner_products",
    "gradient_direction_similarity",
    "gradient_magnitude_similarity",
    "incidence_of_conflict",
    "loss_trend_correlation",
    "magnitude_similarity_matrix",
    "pair_indices",
    "ranking_distance",
    "ranking_similarity",
    "s_conflict_ranking",
    "s_conflict_scores",
    "tail_reduction",
]
