"""Δm: a method's relative degradation from a baseline, and the papers' reporting rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deconflict.metrics._base import MetricError

__all__ = ["delta_m", "last_k_mean", "mean_std", "relative_changes"]


def _as_array(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise MetricError(f"delta_m: {name} must be a non-empty list of numbers, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise MetricError(f"delta_m: {name} contains NaN or Inf: {array.tolist()}.")
    return array


def relative_changes(
    values: Sequence[float], baseline: Sequence[float], higher_is_better: Sequence[bool]
) -> np.ndarray:
    """Per metric, (−1)^{h_k} (M_k − B_k) / B_k in percent: positive = worse than the baseline."""
    m = _as_array("values", values)
    b = _as_array("baseline", baseline)
    h = np.asarray(higher_is_better, dtype=bool)
    if not (m.shape == b.shape == h.shape):
        raise MetricError(f"delta_m: {m.size} values, {b.size} baseline values and {h.size} directions must match.")
    if np.any(b == 0):
        raise MetricError(
            f"delta_m: baseline metric(s) {np.nonzero(b == 0)[0].tolist()} are 0: the relative change is undefined."
        )
    sign = np.where(h, -1.0, 1.0)
    return 100.0 * sign * (m - b) / np.abs(b)


def delta_m(
    values: Sequence[float],
    baseline: Sequence[float],
    higher_is_better: Sequence[bool],
    groups: Sequence[Sequence[int]] | None = None,
) -> float:
    """Relative degradation (percent, positive = worse than ``baseline``).

    * ``groups=None``: the mean over all K metrics, Δm = (1/K) Σ_k (−1)^{h_k} (M_k − B_k)/B_k · 100
      — DR-MGF Eq. (11), Nash-MTL, CAGrad, FAMO, the sparse-training tables.
    * ``groups`` (metric indices per task): the mean within each task, then over the tasks —
      Maninis et al. 2019, Eq. (4), used by Recon and the task-priority paper, which print the
      improvement Δ = −Δm.

    Every metric index must appear in exactly one group.
    """
    changes = relative_changes(values, baseline, higher_is_better)
    if groups is None:
        return float(changes.mean())
    seen = sorted(i for group in groups for i in group)
    if not groups or any(len(g) == 0 for g in groups) or seen != list(range(changes.size)):
        raise MetricError(
            f"delta_m: groups {list(map(list, groups))} must partition the {changes.size} metric indices."
        )
    return float(np.mean([changes[list(group)].mean() for group in groups]))


def last_k_mean(history: Sequence[Sequence[float]] | np.ndarray, k: int = 10) -> np.ndarray:
    """The mean of the last ``k`` epochs (rows) of a per-epoch metric history (MTAN's reporting rule).

    Because Δm is linear in the metrics for a fixed baseline, the Δm of these means equals the mean
    of the last k per-epoch Δm values (as GO4Align prints it).
    """
    array = np.asarray(history, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] < k:
        raise MetricError(f"last_k_mean: {array.shape[0]} epochs, fewer than k = {k}.")
    return array[-k:].mean(0).squeeze()


def mean_std(values_over_seeds: Sequence[Sequence[float]] | np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over seeds (rows); ``ddof=1`` (sample std) by default, 0 for one seed."""
    array = np.asarray(values_over_seeds, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] == 0:
        raise MetricError("mean_std: no seed given.")
    std = array.std(0, ddof=ddof) if array.shape[0] > ddof else np.zeros(array.shape[1])
    return array.mean(0).squeeze(), std.squeeze()
