"""The house rules: layout, notebooks wired to stages, pins in agreement, layers respected."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.tools.refresh_golden import problems

REPO = Path(__file__).resolve().parents[1]
PAPERS = sorted(p for p in (REPO / "papers").iterdir() if p.is_dir())
NOTEBOOKS = sorted(REPO.glob("papers/*/notebooks/*.ipynb"))
REQUIRED_TOP_LEVEL = {
    "papers",
    "shared",
    "pipelines",
    "data",
    "tests",
    "dvc.yaml",
    "environment.yml",
    "params.yaml",
    "pyproject.toml",
    "README.md",
    ".ci",
}
ALLOWED_TOP_LEVEL = REQUIRED_TOP_LEVEL | {
    "Makefile",
    ".gitignore",
    ".dvcignore",
    ".dvc",
    "dvc.lock",
    "CONTRIBUTING.md",
    ".pre-commit-config.yaml",
}


def tracked_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {name.split("/")[0] for name in files}


def test_top_level_is_the_design_cards():
    top = tracked_top_level()
    assert top >= REQUIRED_TOP_LEVEL, REQUIRED_TOP_LEVEL - top
    assert top <= ALLOWED_TOP_LEVEL, top - ALLOWED_TOP_LEVEL
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


def test_dvcignore_keeps_caches_out_of_hashes():
    lines = (REPO / ".dvcignore").read_text().splitlines()
    for pattern in ("__pycache__/", "*.pyc", ".ipynb_checkpoints/"):
        assert pattern in lines


@pytest.mark.parametrize("paper", PAPERS, ids=[p.name for p in PAPERS])
def test_every_paper_folder_has_its_parts(paper):
    for part in ("dvc.yaml", "params.yaml", "README.md", "reference"):
        assert (paper / part).exists(), f"{paper.name} lacks {part}"
    if yaml.safe_load((paper / "dvc.yaml").read_text()).get("stages"):
        assert (paper / "notebooks").is_dir(), f"{paper.name} has stages but no notebooks/"
    assert list((paper / "reference").glob("*.csv")), f"{paper.name}/reference has no printed numbers"
    for csv in (paper / "reference").glob("*.csv"):
        header = csv.read_text().splitlines()[0].split(",")
        assert header[0] == "table_or_figure", f"{csv.name}: first column must name the table or figure"


def declared_tables() -> list[tuple[Path, str, dict]]:
    """(paper folder, table id, declaration) of every table and figure the papers' params declare."""
    found = []
    for paper in PAPERS:
        tables = (yaml.safe_load((paper / "params.yaml").read_text()) or {}).get("tables") or {}
        found += [(paper, table_id, section) for table_id, section in tables.items()]
    return found


TABLES = declared_tables()


def test_every_notebook_is_a_declared_table():
    declared = {paper / "notebooks" / f"{table_id}.ipynb" for paper, table_id, _ in TABLES}
    assert set(NOTEBOOKS) == declared, set(NOTEBOOKS) ^ declared


@pytest.mark.parametrize("paper, table_id, section", TABLES, ids=[f"{p.name}-{t}" for p, t, _ in TABLES])
def test_every_table_is_rendered_by_its_papers_stage(paper, table_id, section):
    """Tables as data: the paper's one foreach stage renders every entry; nothing is listed by hand."""
    from deconflict.reporting import REPORTS

    assert section["kind"] in REPORTS, f"unknown kind {section['kind']!r}"
    assert ((paper / section["reference"]).is_file() and (paper / section["input"]).exists()) or "runs" in section[
        "input"
    ]
    notebook = paper / "notebooks" / f"{table_id}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert problems(nb) == [], "run tests/tools/refresh_golden.py on it"
    assert nb.metadata["kernelspec"]["name"] == "deconflict"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    defaults = {}
    exec(tagged[0].source, {}, defaults)
    assert defaults == {
        "profile": "smoke",
        "params_file": "../params.yaml",
        "table_id": table_id,
        "out_dir": None,
        "metrics_path": None,
        "plots_path": None,
    }
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells), "the summary cell is checked by nbval"
    for cell in nb.cells:  # prose, the parameters, and one library call per code cell (besides imports)
        if cell.cell_type == "code" and cell is not tagged[0]:
            body = ast.parse(cell.source).body
            statements = [node for node in body if not isinstance(node, (ast.Import, ast.ImportFrom))]
            assert len(statements) == 1, f"a table notebook makes one library call per cell:\n{cell.source}"

    render = yaml.safe_load((paper / "dvc.yaml").read_text())["stages"]["render"]
    assert render["foreach"] == "${tables}"
    assert "notebooks/${key}.ipynb" in render["do"]["cmd"] and "notebooks/${key}.ipynb" in render["do"]["deps"]
    assert {"${item.reference}", "${item.input}"} <= set(render["do"]["deps"])
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    assert f"papers/{paper.name}/outputs" in root["deps"], "the root report stage must depend on the paper's outputs"


def test_environment_yml_agrees_with_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for requirement in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]:
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned exactly"
        pins[name.lower()] = version
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            assert entry["pip"] == ['-e ".[test]"'] or entry["pip"] == ["-e .[test]"]
            continue
        name, _, version = entry.partition("=")
        if name == "python":
            assert version == "3.11"
        elif name.lower() in pins and version:
            assert version == pins[name.lower()], f"environment.yml pins {entry}, pyproject {pins[name.lower()]}"


def test_readme_shows_the_two_commands_and_they_exist():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for command in ("make repro", "make test"):
        assert command in readme
        assert re.search(rf"^{command.split()[1]}:", makefile, re.M)
    assert "dvc exp run -S profile=full" in readme


LAYERS = {
    "errors": 0,
    "io": 0,
    "config": 0,
    "cli": 0,
    "numerics": 0,
    "registry": 0,
    "portable": 0,
    "grad": 1,
    "metrics": 1,
    "optim": 2,
    "tasks": 2,
    "models": 3,
    "data": 3,
    "analysis": 5,
    "train": 6,
    "methods": 7,
    "experiments": 8,
    "reporting": 9,
}


def test_lower_layers_never_import_higher_ones():
    package = REPO / "shared" / "deconflict"
    violations = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):
            continue
        own = LAYERS[parts[0]]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("deconflict."):
                    target = name.split(".")[1]
                    if LAYERS[target] > own:
                        violations.append(f"{'/'.join(parts)} (layer {own}) imports {name} (layer {LAYERS[target]})")
    assert violations == []


def test_every_reference_csv_follows_the_one_schema():
    from deconflict.experiments.reference import load_reference

    files = sorted(REPO.glob("papers/*/reference/*.csv"))
    assert len(files) >= 20
    for path in files:
        load_reference(path)  # raises on another schema or a repeated (row, task, column)


def test_every_dataset_is_documented_and_tracked_by_the_training_stage():
    from deconflict import data

    for name in data.available():
        assert (REPO / "data" / name / "README.md").is_file(), f"data/{name}/README.md is missing"
    train = yaml.safe_load((REPO / "pipelines" / "train_stage.yaml").read_text())  # every run's stage
    # the real data (full profile) and the synthetic data (smoke) are dependencies of every run
    assert {"../data/${item.dataset}", "../data/synthetic/${item.dataset}"} <= set(train["deps"])
    assert "training.${item.family}" in train["params"]


def test_the_training_stage_depends_on_every_library_module_a_run_imports():
    """A change to any code a training run executes (the pinned kernels included) must make DVC
    rerun it; only the rendering layer and the command-line wrapper may be left out."""
    import sys

    probe = (
        "import runpy, sys; sys.argv = ['train.py', '--help']\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('deconflict.'))))"
    )
    env = {"DECONFLICT_UNPINNED": "1", "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO / "pipelines", env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.splitlines()[-1].split())
    train = yaml.safe_load((REPO / "pipelines" / "train_stage.yaml").read_text())  # every run's stage
    folders, files = set(), set()  # a folder covers its package and everything in it; a file its module only
    for dep in train["deps"]:
        if dep.startswith("../shared/deconflict/"):
            module = "deconflict." + dep.removeprefix("../shared/deconflict/").removesuffix(".py").replace("/", ".")
            (files if dep.endswith(".py") else folders).add(module.removesuffix(".__init__"))
    uncovered = {m for m in imported if m not in files and not any(m == f or m.startswith(f + ".") for f in folders)}
    assert {m.split(".")[1] for m in uncovered} <= {"cli", "reporting"}, sorted(uncovered)


def test_the_readme_states_the_smoke_budget_the_benchmark_checks():
    from tests.benchmarks import stage_times

    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- smoke budget[^>]*-->\n(.*?)<!-- end of smoke budget -->", readme, re.S)
    assert match, "README.md lost its smoke budget table"
    rows = [line.strip("|").split("|") for line in match.group(1).splitlines() if line.startswith("| ")]
    stated = {cells[0].strip(): float(cells[1]) for cells in rows[1:]}  # rows[0]: the header
    expected = {
        **stage_times.BUDGET_MINUTES,
        "all of `dvc repro`": stage_times.TOTAL_MINUTES,
        "`make repro`, fresh clone, install included": stage_times.MAKE_REPRO_MINUTES,
        "`make test` after it": stage_times.MAKE_TEST_MINUTES,
    }
    assert stated == expected
    # core-minutes of WORKERS stages side by side within the wall budget of `dvc repro`
    assert sum(stage_times.BUDGET_MINUTES.values()) <= stage_times.WORKERS * stage_times.TOTAL_MINUTES
