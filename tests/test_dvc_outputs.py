"""After the smoke pipeline (`make test` runs `dvc repro` first): DVC shows the reproduced tables —
`dvc metrics show` / `diff`, `dvc exp show` and `dvc plots show` print every table, row by row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deconflict.experiments.tables import load_run_tables, paper_tables

REPO = Path(__file__).resolve().parents[1]
#: every table whose rows are runs (run tables, and the conflict tables that read the same runs)
RUN_TABLES = [table for path in sorted((REPO / "papers").glob("*/params.yaml")) for table in load_run_tables(path)]
KINDS = {
    table_id: section["kind"]
    for path in sorted((REPO / "papers").glob("*/params.yaml"))
    for table_id, section in paper_tables(path).items()
}
DVC = (
    str(Path(sys.executable).parent / "dvc") if (Path(sys.executable).parent / "dvc").exists() else shutil.which("dvc")
)


def dvc(*args: str) -> str:
    result = subprocess.run([DVC, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def metrics_show() -> dict:
    missing = [t for t in RUN_TABLES if not (REPO / "papers" / t.paper / "metrics" / f"{t.table_id}.json").is_file()]
    assert not missing, f"no DVC metrics for {[t.table_id for t in missing]}: run `dvc repro` (make test does) first"
    shown = json.loads(dvc("metrics", "show", "--json"))
    return next(iter(shown.values()))["data"]


def test_metrics_show_lists_every_reproduced_row_of_every_table(metrics_show):
    for table in RUN_TABLES:
        key = f"papers/{table.paper}/metrics/{table.table_id}.json"
        assert key in metrics_show, key
        rows = metrics_show[key]["data"]
        reproduced = [row.label.replace(".", "·") for row in table.rows if row.runs]
        if KINDS[table.table_id] == "route_pruning":  # one entry per row and pruned task: "DR-MGF pruned depth"
            owners = {
                key: next((label for label in reproduced if key.startswith(f"{label} pruned ")), None) for key in rows
            }
            assert None not in owners.values() and set(owners.values()) == set(reproduced), table.table_id
            pruned = {key.rpartition(" pruned ")[2] for key in rows}  # every task's degradation, for each task pruned
            assert all(set(values) == pruned for values in rows.values()), table.table_id
            continue
        assert sorted(rows) == sorted(reproduced), table.table_id
        reductions = {label for label in reproduced if "reduction_percent" in rows[label]}
        for label in reproduced:
            values = rows[label]
            assert values and all(isinstance(v, (int, float)) for v in values.values() if v is not None)
            if KINDS[table.table_id] == "run_table":  # each task's headline metric, and Δm
                assert len(values) >= 2
                if label != table.baseline:
                    assert "Δm" in values, (table.table_id, label)
            elif KINDS[table.table_id] == "conflict_distribution" and label != table.baseline:
                # Recon's Reduction (%) is there for every row, or (the baseline without a conflicting tail) for none
                expected = {"conflicting_percent", "reduction_percent"} if reductions else {"conflicting_percent"}
                assert set(values) == expected, (table.table_id, label)
            elif KINDS[table.table_id] == "conflict_incidence":
                assert set(values) == {"all_epochs", "last_half"}, (table.table_id, label)


def test_metrics_diff_and_exp_show_read_them(metrics_show):
    diff = json.loads(dvc("metrics", "diff", "--json") or "{}")
    assert isinstance(diff, dict)  # HEAD against the workspace: empty when the committed numbers reproduce
    shown = json.loads(dvc("exp", "show", "--json", "--no-pager"))
    workspace = shown[0]["data"]
    for table in RUN_TABLES:  # every table's metrics (the CSV/table view leaves some columns out: README)
        assert f"papers/{table.paper}/metrics/{table.table_id}.json" in workspace["metrics"], table.table_id
    header = dvc("exp", "show", "--csv", "--no-pager").splitlines()[0]
    assert "metrics/table7_nyuv2.json" in header and "profile" in header  # the switch of smoke and full


def test_plots_show_draws_every_row_of_every_table(tmp_path, metrics_show):
    dvc("plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    for table in RUN_TABLES:
        assert f"plots/{table.table_id}.csv" in page, table.table_id
        for row in table.rows:
            if row.runs:
                assert json.dumps(row.label)[1:-1] in page or row.label in page, (table.table_id, row.label)


def test_every_paper_stage_declares_its_metrics_and_plots():
    for path in sorted((REPO / "papers").glob("*/dvc.yaml")):
        stages = yaml.safe_load(path.read_text()).get("stages") or {}
        if "render" not in stages:
            continue
        render = stages["render"]["do"]
        assert render["metrics"] == [{"metrics/${key}.json": {"cache": False}}]
        (plot,) = render["plots"]
        assert plot["plots/${key}.csv"]["template"] == "rows"
    assert (REPO / ".dvc" / "plots" / "rows.json").is_file()
