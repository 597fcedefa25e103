"""Instruments on histories of gradient measurements (tidy tables from the monitor)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from deconflict.errors import ShapeError

#: the layer name under which GradientMonitor records the whole shared part
WHOLE_SHARED = "(all shared)"

__all__ = [
    "RECON_BINS",
    "WHOLE_SHARED",
    "bin_labels",
    "conflict_gain_correlation",
    "cosine_distribution",
    "incidence_of_conflict",
    "loss_trend_correlation",
    "ranking_distance",
    "ranking_similarity",
    "s_conflict_ranking",
    "s_conflict_scores",
    "tail_reduction",
]

#: Recon's bin edges for the distribution of cos φ_ij, from 1 down to −1 (Table 6: Multi-Fashion+MNIST;
#: Tables 8–10: CityScapes, NYUv2, PASCAL-Context), and the start of the tail whose share the
#: "Reduction (%)" row compares (the tables' captions).
RECON_BINS: dict[str, dict[str, object]] = {
    "table6": {"edges": (1.0, 0.0, -0.01, -0.02, -0.03, -1.0), "tail": -0.01},
    "table8": {"edges": (1.0, 0.0, -0.02, -0.04, -0.06, -0.08, -1.0), "tail": -0.02},
    "table9": {"edges": (1.0, 0.0, -0.02, -0.04, -0.06, -0.08, -1.0), "tail": -0.04},
    "table10": {"edges": (1.0, 0.0, -0.02, -0.04, -0.06, -0.08, -1.0), "tail": -0.02},
}


def _descending(edges: Sequence[float]) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) < 0):
        raise ShapeError(f"bin edges must be a strictly decreasing sequence, got {list(edges)}.")
    return e


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Recon's printed labels: "[1.0, 0)", "(0, -0.01]", ..., "(-0.03, -1.0]"."""
    e = _descending(edges)
    fmt = lambda x: f"{x:g}" if x not in (1.0, -1.0) else f"{x:.1f}"  # noqa: E731
    return [f"[{fmt(e[0])}, {fmt(e[1])})"] + [f"({fmt(e[k])}, {fmt(e[k + 1])}]" for k in range(1, e.size - 1)]


def cosine_distribution(cosines: Sequence[float] | np.ndarray, edges: Sequence[float]) -> pd.Series:
    """Percentage of cosine values in each bin of Recon's distribution tables.

    With descending edges e_0 = 1 > e_1 = 0 > … > e_K = −1 the first bin is (e_1, e_0] (positive
    cosines) and bin k ≥ 1 is [e_{k+1}, e_k): the end nearer to 0 is open, as printed ("[1.0, 0)",
    "(0, -0.01]", …). A cosine of exactly 0 therefore falls in no bin (it is neither conflicting nor
    aligned) but counts in the total.
    """
    e = _descending(edges)
    values = np.asarray(cosines, dtype=np.float64).ravel()
    if values.size == 0:
        raise ShapeError("no cosine value given: the distribution is undefined.")
    counts = [np.sum((values > e[1]) & (values <= e[0]))]
    counts += [np.sum((values >= e[k + 1]) & (values < e[k])) for k in range(1, e.size - 1)]
    return pd.Series(100.0 * np.asarray(counts) / values.size, index=bin_labels(edges))


def tail_reduction(
    baseline: pd.Series | Mapping[str, float],
    method: pd.Series | Mapping[str, float],
    edges: Sequence[float],
    tail: float,
) -> float:
    """Recon's "Reduction (%)": 100 (J − X)/J, with J and X the baseline's and the method's summed
    percentages of the bins below ``tail`` (e.g. −0.01: cos φ_ij ∈ [−1, −0.01))."""
    e = _descending(edges)
    labels = bin_labels(edges)
    tail_labels = [labels[k] for k in range(1, e.size - 1) if e[k] <= tail + 1e-12]
    if not tail_labels:
        raise ShapeError(f"no bin lies below {tail} in edges {list(edges)}.")
    j = float(sum(float(baseline[label]) for label in tail_labels))
    x = float(sum(float(method[label]) for label in tail_labels))
    if j == 0:
        raise ShapeError("the baseline has no mass in the tail: the reduction is undefined.")
    return 100.0 * (j - x) / j


def s_conflict_scores(pairs: pd.DataFrame, threshold: float) -> pd.Series:
    """Recon Definition 3 and Algorithm 1: per layer, the number of (iteration, task pair) with
    cos φ_ij < S, summed over the iterations of the monitor's table (columns ``layer``, ``cosine``);
    −1 < S ≤ 0 (Recon uses −0.1, 0, −0.02, −0.02, −0.05 per dataset)."""
    if not -1.0 < threshold <= 0.0:
        raise ShapeError(f"the S-conflict threshold must satisfy −1 < S ≤ 0, got {threshold}.")
    if not {"layer", "cosine"} <= set(pairs.columns):
        raise ShapeError("s_conflict_scores needs a table with columns 'layer' and 'cosine' (GradientMonitor.pairs()).")
    if "level" in pairs.columns:  # the monitor's table: only the individual layers of the shared parameters
        pairs = pairs[(pairs["level"] == "parameter") & (pairs["layer"] != WHOLE_SHARED)]
    return (pairs["cosine"] < threshold).groupby(pairs["layer"], sort=False).sum().astype(int)


def s_conflict_ranking(scores: pd.Series) -> list[str]:
    """Layers from the most to the least conflicting (ties keep the layers' order); Recon turns the
    top K task-specific."""
    return list(scores.sort_values(ascending=False, kind="stable").index)


def ranking_distance(ranking_a: Sequence[str], ranking_b: Sequence[str]) -> float:
    """Recon Eq. (22): d(π_a, π_b) = (1/|L|) Σ_l |π_a(l) − π_b(l)|, π(l) the rank of layer l."""
    if sorted(ranking_a) != sorted(ranking_b) or len(set(ranking_a)) != len(ranking_a):
        raise ShapeError("ranking_distance needs two orderings of the same layers.")
    position_b = {layer: index for index, layer in enumerate(ranking_b)}
    return float(np.mean([abs(index - position_b[layer]) for index, layer in enumerate(ranking_a)]))


def incidence_of_conflict(summary: pd.DataFrame, last_fraction: float | None = None) -> float:
    """Sparse-training §4.1: the average incidence of gradient conflict in percent,
    p = 100/(E·I) Σ_e Σ_i N_gc/N_all — the mean over measured steps of the fraction of task pairs with
    cos < 0 (column ``conflict_fraction`` of GradientMonitor.summary(), one layer / level). With
    ``last_fraction`` (e.g. 0.5) only the steps of the last part of training (by epoch) count."""
    if "conflict_fraction" not in summary.columns or summary.empty:
        raise ShapeError("incidence_of_conflict needs a non-empty table with a 'conflict_fraction' column.")
    rows = summary
    if last_fraction is not None:
        if not 0 < last_fraction <= 1:
            raise ShapeError(f"last_fraction must be in (0, 1], got {last_fraction}.")
        epochs = int(summary["epoch"].max()) + 1
        first = epochs - max(1, round(last_fraction * epochs))
        rows = summary[summary["epoch"] >= first]
    return float(100.0 * rows["conflict_fraction"].mean())


def ranking_similarity(scores_a: Sequence[float], scores_b: Sequence[float], fold: bool = True) -> float:
    """Robust-MTL §6.3: the share of ordered pairs (i, j), i ≠ j, that the two scorings order alike
    (ties count as agreement only when tied in both). With ``fold`` the score is mapped to
    max(s, 1 − s) ∈ [0.5, 1] (Table 3: an indicator and its negation predict equally well)."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ShapeError("ranking_similarity needs two score lists of the same length ≥ 2.")
    sign_a = np.sign(a[:, None] - a[None, :])
    sign_b = np.sign(b[:, None] - b[None, :])
    off_diagonal = ~np.eye(a.size, dtype=bool)
    agreement = float(np.mean(sign_a[off_diagonal] == sign_b[off_diagonal]))
    return max(agreement, 1.0 - agreement) if fold else agreement


def conflict_gain_correlation(pairs: pd.DataFrame, layer: str = WHOLE_SHARED) -> float:
    """DR-MGF Fig. 5: the Pearson correlation between the conflict value C (Eq. 2) and the relative
    convergence gain G (Eq. 3) over the monitored steps and task pairs (both directions) of one layer
    of the monitor's table. The paper correlates "normalized" C and G; Pearson's r is unchanged by
    any affine normalisation of either series."""
    rows = pairs[pairs["layer"] == layer] if "layer" in pairs.columns else pairs
    if "level" in rows.columns:
        rows = rows[rows["level"] == "parameter"] if layer == WHOLE_SHARED else rows
    c = np.concatenate([rows["conflict_value_ij"].to_numpy(), rows["conflict_value_ji"].to_numpy()])
    g = np.concatenate([rows["convergence_gain_ij"].to_numpy(), rows["convergence_gain_ji"].to_numpy()])
    if c.size < 3 or np.std(c) == 0 or np.std(g) == 0:
        raise ShapeError("conflict_gain_correlation needs at least 3 non-constant (C, G) pairs.")
    return float(np.corrcoef(c, g)[0, 1])


def loss_trend_correlation(losses: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between the tasks' loss curves over epochs (one column per task)."""
    if losses.shape[0] < 3 or losses.shape[1] < 2:
        raise ShapeError("loss_trend_correlation needs at least 3 epochs of at least 2 tasks.")
    return losses.astype(np.float64).corr(method="pearson")
