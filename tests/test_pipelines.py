"""The stage entry points: bad input gets one clear line and exit status 2, output is atomic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from deconflict.reporting import ArtifactWriter
from deconflict.reporting.index import collect, render_html, render_markdown

REPO = Path(__file__).resolve().parents[1]
TOY_SECTION = {
    "lr": 0.01,
    "methods": [{"name": "equal", "label": "Joint"}, {"name": "pcgrad", "label": "PCGrad"}],
    "smoke": {"steps": 20, "n_inits": 1},
    "full": {"steps": 40, "n_inits": 2},
}


def run(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def fake_repo(tmp_path: Path, toy: dict, profile: str = "smoke") -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text(f"profile: {profile}\nseeds: {{smoke: [0], full: [0, 1]}}\n")
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "params.yaml").write_text(yaml.safe_dump({"toy": toy}))
    return tmp_path / "paper" / "params.yaml"


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_toy_stage_writes_its_results_and_resumes(tmp_path):
    params = fake_repo(tmp_path, TOY_SECTION)
    out = tmp_path / "results"
    result = run("toy_trajectories.py", "--params", str(params), "--out", str(out))
    assert result.returncode == 0, result.stderr
    trajectories = pd.read_csv(out / "trajectories.csv")
    assert set(trajectories["method"]) == {"Joint", "PCGrad"} and trajectories["step"].max() == 20
    assert len(list((out / "runs").iterdir())) == 2
    # a full-profile run replaces the smoke runs instead of reusing them
    result = run("toy_trajectories.py", "--params", str(params), "--out", str(out), "--profile", "full")
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(out / "trajectories.csv")["step"].max() == 40
    assert len(list((out / "runs").iterdir())) == 4


def test_unknown_method_in_params(tmp_path):
    params = fake_repo(tmp_path, {**TOY_SECTION, "methods": [{"name": "pcgard"}]})
    result = run("toy_trajectories.py", "--params", str(params), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "unknown method 'pcgard'", "pcgrad", "nash_mtl")
    assert not (tmp_path / "out" / "trajectories.csv").exists()


def test_unknown_profile(tmp_path):
    params = fake_repo(tmp_path, TOY_SECTION, profile="huge")
    result = run("toy_trajectories.py", "--params", str(params), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "unknown profile 'huge'", "smoke", "full")


def test_report_without_outputs_says_which_stage_to_run(tmp_path):
    (tmp_path / "papers" / "x" / "outputs" / "fig").mkdir(parents=True)
    result = run("report.py", "--papers", str(tmp_path / "papers"), "--out", str(tmp_path))
    assert_one_line_error(result, "no rendered table or figure", "dvc repro")


def test_render_notebook_rejects_undeclared_tables_and_parameters(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "smoke", "tables": {"fig3_toy": {"kind": "drmgf_toy"}}}))
    (tmp_path / ".dvc").mkdir()
    args = ["--params", str(params), "--out", str(tmp_path / "out"), "--executed", str(tmp_path / "executed.ipynb")]
    result = run("render_notebook.py", str(REPO / "papers/drmgf/notebooks/fig3_toy.ipynb"), *args, "--table", "fig4")
    assert_one_line_error(result, "declares no table 'fig4'", "fig3_toy")
    notebook = tmp_path / "fig3_toy.ipynb"
    source = (REPO / "papers/drmgf/notebooks/fig3_toy.ipynb").read_text().replace("plots_path = None", "")
    notebook.write_text(source)
    result = run("render_notebook.py", str(notebook), *args, "--plots", str(tmp_path / "p.csv"))
    assert_one_line_error(result, "does not define ['plots_path']")


def test_artifact_writer_and_index(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    silent = ArtifactWriter(None, notebook="n", paper="p", profile="smoke")
    silent.table(pd.DataFrame({"a": [1]}), "t", "caption")
    silent.close()
    assert list(tmp_path.iterdir()) == []  # interactive/nbval runs write nothing

    out = tmp_path / "papers" / "p" / "outputs" / "n"
    writer = ArtifactWriter(out, notebook="n", paper="p", profile="smoke", title="A title")
    writer.table(pd.DataFrame({"method": ["x"], "value": [1.5]}), "table1", "Table 1")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    writer.figure(fig, "fig1", "Figure 1")
    writer.metrics({"x": {"value": float("nan")}}, "m")
    writer.close()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["table1.csv", "table1.md", "fig1.png", "fig1.pdf", "m.json", "manifest.json"]
    )
    assert (out / "m.json").read_text().count("null") == 1
    first_pdf = (out / "fig1.pdf").read_bytes()
    writer.figure(fig, "fig1", "Figure 1")
    assert (out / "fig1.pdf").read_bytes() == first_pdf  # no timestamp: re-runs give identical files

    entries = collect(tmp_path / "papers", [out])
    markdown = render_markdown(entries, tmp_path / "papers")
    assert "profile: **smoke**" in markdown and "[fig1.png](p/outputs/n/fig1.png)" in markdown
    page = render_html(entries, tmp_path / "papers")
    assert "<img src='p/outputs/n/fig1.png'" in page and "<td>x</td>" in page


def test_an_executed_notebook_is_the_same_bytes_every_time_and_names_no_local_path(tmp_path):
    """The executed notebook is a DVC output whose hash is committed: nothing of when, where or by which
    kernel session it ran may be in it (papermill stamps times, paths and a random cell id)."""
    paper = REPO / "papers" / "drmgf"
    if not (paper / "results" / "toy").is_dir():
        import pytest

        pytest.skip("needs the DR-MGF toy's results: run `dvc repro` first")
    executed = tmp_path / "executed.ipynb"
    args = ["--params", str(paper / "params.yaml"), "--table", "fig3_toy", "--out", str(tmp_path / "out")]
    runs = []
    for _ in range(2):
        result = run(
            "render_notebook.py", str(paper / "notebooks" / "fig3_toy.ipynb"), *args, "--executed", str(executed)
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append(executed.read_bytes())
    assert runs[0] == runs[1]
    assert str(REPO).encode() not in runs[0]  # the stage passes paths relative to the notebook
