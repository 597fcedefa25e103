"""Numbers the papers derive from other printed numbers, recomputed with our functions.

Each paper's ``reference/derived_numbers.yaml`` says which printed number is derived from which
(Δm columns, Recon's "Reduction (%)" rows, robust-MTL's relative-change table, …) and under which
convention. A printed value counts as reproduced when it is consistent with the printed inputs
*within printing precision*: every input may be anywhere in its rounding interval (±½ of its last
printed digit), our function is evaluated at the extremes, and the printed value's own rounding
interval must meet the resulting range. Printed values that no convention reproduces are listed in
the YAML as known failures (with the values tried, also in the paper's README); the test checks
that they still fail, so a change that makes them pass is noticed too.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deconflict.analysis.histories import RECON_BINS, bin_labels, ranking_similarity, tail_reduction
from deconflict.metrics import delta_m, relative_changes

PAPERS = Path(__file__).resolve().parents[1] / "papers"


def number(text: str) -> float:
    return float(str(text).replace(" ", "").replace("%", "").replace("−", "-").replace("+", ""))


def half_unit(decimals) -> float:
    return 0.5 * 10.0 ** (-int(float(decimals)))


def load_specs(kind: str):
    cases = []
    for path in sorted(PAPERS.glob("*/reference/derived_numbers.yaml")):
        for spec in yaml.safe_load(path.read_text()).get(kind, []):
            cases.append(pytest.param(path.parent, spec, id=f"{path.parents[1].name}-{spec['table']}"))
    return cases


def table(folder: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
    return frame


# -- Δm ------------------------------------------------------------------------------------------
def metric_rows(frame: pd.DataFrame, spec: dict) -> pd.DataFrame:
    metrics = frame[
        frame["higher_is_better"].isin(["True", "False"])
        & (frame["column"] != spec["column"])
        & (frame["column"] != "#P.")
    ]
    if "metrics" in spec:
        metrics = metrics[metrics["column"].isin(spec["metrics"])]
    return metrics


def delta_m_range(method: pd.DataFrame, baseline: pd.DataFrame, spec: dict) -> tuple[float, float, float]:
    """(point value, lowest, highest) of the printed sign of Δm over the inputs' rounding intervals."""
    merged = method.merge(baseline, on=["task", "column"], suffixes=("", "_base"))
    if merged.empty:
        raise AssertionError("no metric shared with the baseline row")
    values = merged["value"].map(number).to_numpy()
    base = merged["value_base"].map(number).to_numpy()
    v_half = merged["decimals"].map(half_unit).to_numpy()
    b_half = merged["decimals_base"].map(half_unit).to_numpy()
    higher = (merged["higher_is_better"] == "True").to_numpy()
    groups = None
    if spec["convention"] == "per_task":
        tasks = merged["task"].to_numpy()
        groups = [list(np.nonzero(tasks == task)[0]) for task in dict.fromkeys(tasks)]
    # each term of Δm depends on its own (M_k, B_k) only: bound every term over its four corners
    corners = [
        relative_changes(values + dv * v_half, base + db * b_half, higher)
        for dv, db in itertools.product((-1, 1), repeat=2)
    ]
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)

    def aggregate(changes: np.ndarray) -> float:
        return float(changes.mean()) if groups is None else float(np.mean([changes[g].mean() for g in groups]))

    sign = -1.0 if spec["printed"] == "improvement" else 1.0
    point = sign * delta_m(values, base, higher, groups=groups)
    ends = sorted((sign * aggregate(low), sign * aggregate(high)))
    return point, ends[0], ends[1]


@pytest.mark.parametrize("folder, spec", load_specs("delta_m"))
def test_delta_m_columns(folder, spec):
    frame = table(folder, spec["table"])
    base_frame = table(folder, spec.get("baseline_table", spec["table"]))
    baseline = metric_rows(base_frame[base_frame["row"] == spec["baseline"]], spec)
    assert not baseline.empty, f"no baseline row {spec['baseline']!r}"
    known = spec.get("known_failures") or {}
    printed = frame[(frame["column"] == spec["column"]) & (frame["row"] != spec["baseline"])]
    printed = printed[printed["value"].str.strip().isin(["", "-", "—"]) == False]  # noqa: E712
    checked, unexpected, still_failing = 0, [], []
    for _, cell in printed.iterrows():
        point, low, high = delta_m_range(metric_rows(frame[frame["row"] == cell["row"]], spec), baseline, spec)
        value, slack = number(cell["value"]), half_unit(cell["decimals"])
        reproduced = low - slack - 1e-9 <= value <= high + slack + 1e-9
        expected_failure = cell["row"] in known or "*" in known
        checked += 1
        if expected_failure and reproduced:
            still_failing.append(f"{cell['row']}: listed as not reproducible but {value} ∈ [{low:.3f}, {high:.3f}]")
        if not expected_failure and not reproduced:
            unexpected.append(f"{cell['row']}: printed {value}, recomputed {point:.3f} (range {low:.3f} … {high:.3f})")
    assert checked > 0
    assert unexpected == [], "\n".join(unexpected)
    assert still_failing == [], "\n".join(still_failing)


# -- Recon: "Reduction (%)" ---------------------------------------------------------------------
@pytest.mark.parametrize("folder, spec", load_specs("reductions"))
def test_recon_reduction_rows(folder, spec):
    frame = table(folder, spec["table"])
    bins = RECON_BINS[spec["bins"]]
    labels = bin_labels(bins["edges"])
    percentages = frame[frame["kind"] == "bin_percent"]
    assert set(percentages["column"]) == set(labels), "the printed bin labels are Recon's"
    base = percentages[percentages["row"] == spec["baseline"]].set_index("column")
    reductions = frame[(frame["column"] == "Reduction (%)") & (frame["row"] != spec["baseline"])]
    assert len(reductions) >= 4
    for _, cell in reductions.iterrows():
        method = percentages[percentages["row"] == cell["row"]].set_index("column")
        values = []
        for db, dm in itertools.product((-1, 1), repeat=2):  # J up/down × X up/down (monotone in both)
            b = {k: number(base.loc[k, "value"]) + db * half_unit(base.loc[k, "decimals"]) for k in labels}
            m = {k: number(method.loc[k, "value"]) + dm * half_unit(method.loc[k, "decimals"]) for k in labels}
            values.append(tail_reduction(b, m, bins["edges"], bins["tail"]))
        value, slack = number(cell["value"]), half_unit(cell["decimals"])
        assert min(values) - slack - 1e-9 <= value <= max(values) + slack + 1e-9, (cell["row"], value, values)


@pytest.mark.parametrize("folder, spec", load_specs("ranking_distance_grid"))
def test_recon_ranking_distances_fit_eq_22(folder, spec):
    """Eq. (22) between two permutations of |L| layers is a multiple of 2/|L|; the printed values
    (2 decimals) must be consistent with that for the layer count of the official ranking file."""
    frame = table(folder, spec["table"])
    values = [number(v) for v in frame["value"] if v.strip() not in ("", "-")]
    step = 2.0 / spec["layers"]
    assert values
    for value in values:
        nearest = round(value / step) * step
        assert abs(nearest - value) <= 0.005 + 1e-9, value


# -- robust-MTL ----------------------------------------------------------------------------------
@pytest.mark.parametrize("folder, spec", load_specs("relative_change"))
def test_robust_mtl_relative_change_table(folder, spec):
    changes = table(folder, spec["table"])
    source = table(folder, spec["source"])
    checked = 0
    for _, cell in changes.iterrows():  # row "PCGrad [72]": parameter level "PCGrad [72]", feature level "(rep) PCGrad"
        method = cell["row"].split(" [")[0]
        param = source[(source["row"] == cell["row"]) & (source["column"] == cell["column"])].iloc[0]
        rep = source[(source["row"] == f"(rep) {method}") & (source["column"] == cell["column"])].iloc[0]
        p, r = number(param["value"]), number(rep["value"])
        hp, hr = half_unit(param["decimals"]), half_unit(rep["decimals"])
        # (rep − param)/param in %: our relative_changes with "lower is better" gives exactly that sign
        corners = [
            float(relative_changes([r + dr * hr], [p + dp * hp], [False])[0])
            for dr, dp in itertools.product((-1, 1), repeat=2)
        ]
        value, slack = number(cell["value"]), half_unit(cell["decimals"])
        assert min(corners) - slack - 1e-9 <= value <= max(corners) + slack + 1e-9, (
            method,
            cell["column"],
            value,
            corners,
        )
        checked += 1
    assert checked == 48


@pytest.mark.parametrize("folder, spec", load_specs("markers"))
def test_robust_mtl_markers_are_one_percent_relative_changes(folder, spec):
    frame = table(folder, spec["table"])
    base = frame[frame["row"] == spec["baseline"]].set_index("column")
    threshold = 100.0 * spec["relative_threshold"]
    checked = 0
    for _, cell in frame[(frame["row"] != spec["baseline"]) & (frame["marker"] != "")].iterrows():
        b, v = number(base.loc[cell["column"], "value"]), number(cell["value"])
        h = half_unit(cell["decimals"])
        possible = set()
        for dv, db in itertools.product(np.linspace(-1, 1, 5), repeat=2):
            change = -float(relative_changes([v + dv * h], [b + db * h], [True])[0])  # + = better
            possible.add("↑" if change > threshold else "↓" if change < -threshold else "–")
        assert cell["marker"] in possible, (cell["row"], cell["column"], cell["marker"], possible)
        checked += 1
    assert checked == 126


@pytest.mark.parametrize("folder, spec", load_specs("ranking_similarity_grid"))
def test_robust_mtl_ranking_similarity_grid(folder, spec):
    """Ranking similarity of n methods counts agreeing ordered pairs: multiples of 2/(n(n−1)).
    Our function, on random scorings of n methods, lands on that grid, and so does every printed value."""
    n = spec["methods"]
    step = 2.0 / (n * (n - 1))
    generator = np.random.default_rng(0)
    for _ in range(20):
        similarity = ranking_similarity(generator.normal(size=n), generator.normal(size=n))
        assert abs(similarity / step - round(similarity / step)) < 1e-9 and 0.5 <= similarity <= 1.0
    printed = [number(v) for v in table(folder, spec["table"])["value"]]
    assert printed
    for value in printed:
        assert abs(round(value / step) * step - value) <= 0.0005 + 1e-9, value


# -- Sparse training: the incidence improvements printed in parentheses (Tabs. 6, 13) -------------
@pytest.mark.parametrize("name", ["table6.csv", "table13.csv"])
def test_sparse_training_incidence_improvements_are_the_method_minus_its_st_row(name):
    frame = table(PAPERS / "sparse_training" / "reference", name)
    cells = {(row["row"], row["column"]): row for _, row in frame.iterrows()}
    improvements = frame[frame["kind"] == "derived"]
    assert len(improvements) == 14  # 7 methods × (all epochs, last 50 %)
    for _, cell in improvements.iterrows():
        column = cell["column"].removesuffix(" improvement")
        method, sparse = cells[(cell["row"].removesuffix(" w/ ST"), column)], cells[(cell["row"], column)]
        slack = half_unit(method["decimals"]) + half_unit(sparse["decimals"]) + half_unit(cell["decimals"])
        assert abs(number(method["value"]) - number(sparse["value"]) - number(cell["value"])) <= slack + 1e-9, cell[
            "row"
        ]
