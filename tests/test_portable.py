"""Portable numerics: under the smoke profile every stage pins its kernels, so another CPU — emulated by
the variables that make the libraries pick other kernels and thread counts — gives the committed numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deconflict.portable import PINNED_ENVIRONMENT, cpu_vendor, is_pinned
from deconflict.reporting.verify import committed_vendor, compare, tolerance_for

REPO = Path(__file__).resolve().parents[1]
PYTHON = os.path.abspath(sys.executable)
RUN = "cityscapes-single-depth"  # a smoke run of the plan: SegNet convolutions, BatchNorm, Adam, 16 steps
PROBE = (
    "from deconflict.portable import pin_process\n"
    "pin_process()\n"
    "import os, torch\n"
    "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
    "from deconflict.portable import apply_torch_settings\n"
    "apply_torch_settings()\n"
    "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), torch.backends.mkldnn.enabled, "
    "f['X86_V4'], os.environ.get('MKL_CBWR'))\n"
)
# what makes the libraries choose other kernels or thread counts, as on other machines
ANOTHER_CPU = {
    "an old CPU, one core": {
        "ATEN_CPU_CAPABILITY": "default",
        "NPY_DISABLE_CPU_FEATURES": "AVX512_ICL,X86_V4",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Nehalem",
    },
    "a big AVX-512 server": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "OMP_NUM_THREADS": "16",
        "MKL_NUM_THREADS": "16",
        "OPENBLAS_CORETYPE": "SkylakeX",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "MKL_CBWR": "AUTO",
    },
}


def probe(cwd: Path, **environment: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENVIRONMENT and k != "DECONFLICT_UNPINNED"}
    result = subprocess.run(
        [PYTHON, "-c", PROBE], cwd=cwd, env={**env, **environment}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def fake_checkout(tmp_path: Path, profile: str) -> Path:
    (tmp_path / ".dvc").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": profile}))
    return tmp_path


def test_a_smoke_stage_pins_its_kernels_and_threads(tmp_path):
    assert probe(fake_checkout(tmp_path, "smoke")) == ["AVX2", "1", "False", "False", "AVX2,STRICT"]


def test_the_full_profile_and_the_opt_out_keep_the_fastest_kernels(tmp_path):
    full = probe(fake_checkout(tmp_path / "full", "full"))
    opted_out = probe(fake_checkout(tmp_path / "smoke", "smoke"), DECONFLICT_UNPINNED="1")
    for result in (full, opted_out):
        assert result[2] == "True" and result[4] == "None"  # oneDNN on, MKL free to dispatch


def test_pinned_environment_is_recognised():
    assert is_pinned(PINNED_ENVIRONMENT)
    assert not is_pinned({**PINNED_ENVIRONMENT, "NPY_DISABLE_CPU_FEATURES": "X86_V4"})
    assert not is_pinned({**PINNED_ENVIRONMENT, "OMP_NUM_THREADS": "8"})


def train(out: Path, **environment: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENVIRONMENT and k != "DECONFLICT_UNPINNED"}
    result = subprocess.run(
        [
            PYTHON,
            str(REPO / "pipelines" / "train.py"),
            "--run",
            RUN,
            "--out",
            str(out / "run"),
            "--work",
            str(out / "work"),
            "--no-progress",
        ],
        cwd=REPO / "pipelines",
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return (out / "run" / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def committed() -> bytes:
    path = REPO / "pipelines" / "runs" / RUN / "metrics.csv"
    assert path.is_file(), "run `dvc repro` (make test does) first: the committed smoke run is the reference"
    return path.read_bytes()


@pytest.mark.parametrize("machine", ANOTHER_CPU)
def test_another_cpu_gives_the_committed_numbers(machine, committed, tmp_path):
    assert train(tmp_path, **ANOTHER_CPU[machine]) == committed


def test_without_the_pins_the_emulation_changes_the_numbers(committed, tmp_path):
    """The emulation is real: the same 'old CPU' without pinning gives other numbers (so the test above can fail)."""
    assert train(tmp_path, DECONFLICT_UNPINNED="1", **ANOTHER_CPU["an old CPU, one core"]) != committed


def test_verify_compares_every_number_within_the_tolerance():
    diff = {
        "papers/recon/metrics/table3_cityscapes.json": {
            "CAGrad.mIoU": {"old": 4.6, "new": 4.6, "diff": 0.0},
            "CAGrad.Δm": {"old": -12.0, "new": -12.3, "diff": -0.3},
            "Joint-train.mIoU": {"old": 4.4, "new": None},
        },
    }
    exact = compare(diff)
    assert list(exact["row"]) == ["CAGrad", "CAGrad", "Joint-train"] and set(exact["table"]) == {
        "recon/table3_cityscapes"
    }
    assert list(exact["within"]) == [True, False, False]
    loose = compare(diff, rtol=0.05)
    assert list(loose["within"]) == [True, True, False]  # a missing number is never within
    assert pd.isna(loose.iloc[2]["difference"])


def test_verify_cli_passes_on_the_committed_numbers():
    result = subprocess.run(
        [PYTHON, str(REPO / "pipelines" / "verify.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 outside" in result.stdout
    # on a CPU of the vendor recorded with the committed numbers, nothing less than bit for bit passes
    if committed_vendor(cwd=str(REPO)) == cpu_vendor():
        assert "tolerance: bit for bit" in result.stdout and "0 within the tolerance" in result.stdout


def test_the_committed_numbers_name_the_cpu_vendor_that_made_them():
    assert committed_vendor(cwd=str(REPO)) in {"GenuineIntel", "AuthenticAMD"}  # an x86-64 machine with AVX2
    assert cpu_vendor()  # this machine's


def test_the_tolerance_is_zero_within_a_vendor_and_the_measured_one_across():
    assert tolerance_for("AuthenticAMD", "AuthenticAMD", 0.1)[0] == 0.0
    assert tolerance_for(None, "GenuineIntel", 0.1)[0] == 0.0  # nothing recorded: the claim is bit for bit
    rtol, why = tolerance_for("GenuineIntel", "AuthenticAMD", 0.1)
    assert rtol == 0.1 and "GenuineIntel" in why and "AuthenticAMD" in why
    assert "not comparable" in tolerance_for("GenuineIntel", "AuthenticAMD", float("inf"))[1]


def test_verify_refuses_a_tolerance_that_is_not_a_number():
    result = subprocess.run(
        [PYTHON, str(REPO / "pipelines" / "verify.py"), "--rtol", "loose"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--rtol must be a number or auto" in result.stderr
