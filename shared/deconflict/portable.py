"""Portable numerics for the smoke profile: the same bits on any x86-64 machine with AVX2 of one CPU vendor.

The libraries under the project pick their numerical kernels by the CPU they run on — PyTorch's
ATen (``ATEN_CPU_CAPABILITY``: default / AVX2 / AVX-512), oneDNN's convolutions (instruction set and
cache-size-dependent blocking), MKL's GEMM, OpenBLAS (NumPy, SciPy), NumPy's own SIMD loops — and
split reductions over as many threads as there are cores. Each choice rounds differently, so the
same code gives other last bits on another machine, and a few training steps turn them into other
numbers. For the smoke profile, whose ``dvc.lock`` is committed as the claim that anyone can
regenerate it bit for bit, every stage pins those choices (:data:`PINNED_ENVIRONMENT`, plus oneDNN
off in PyTorch: :func:`apply_torch_settings`):

* ATen at its AVX2 code path, OpenBLAS at its Haswell (AVX2) kernels, NumPy's dispatch at ``X86_V3``
  (AVX2);
* MKL (PyTorch's GEMM: every convolution and linear layer) at its AVX2 branch in strict
  conditional-numerical-reproducibility mode (``MKL_CBWR=AVX2,STRICT``). Intel documents that on a
  non-Intel CPU this request runs MKL's ``AUTO`` branch instead, and that only the ``COMPATIBLE``
  (SSE2) branch is the same on Intel and AMD; pinned to ``COMPATIBLE``, a SegNet-MTAN smoke run
  (``nyuv2-mtan-pcgrad``) still came out differently on an Intel Xeon and an AMD EPYC, with the same
  code, data and every other pin, while costing ×1.58 its wall time (20.9 s against 13.2 s on the
  EPYC). So the pin is the AVX2 branch, and bit-identity is claimed between machines whose CPUs come
  from the same vendor; across vendors ``make verify`` compares within a tolerance measured between
  the two (README, "Same numbers on any machine");
* convolutions through ATen's own path (im2col + MKL GEMM) instead of oneDNN;
* one thread for PyTorch, MKL and OpenBLAS, no dynamic thread counts; ``PYTHONHASHSEED=0``.

A stage entry point calls :func:`pin_process` before it imports NumPy or PyTorch: under the smoke
profile, if the process is not pinned yet, it re-executes itself with the pinned environment (so
``dvc repro`` run by hand gets the same numbers as ``make repro``). The full profile is left free to
use the fastest kernels of its machine. ``DECONFLICT_UNPINNED=1`` turns the pinning off (to measure
what it costs, or to emulate another CPU). Where bit-identity cannot hold — another architecture, a
GPU — ``make verify`` compares the regenerated numbers within a stated tolerance.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PINNED_ENVIRONMENT", "THREADS", "apply_torch_settings", "cpu_vendor", "is_pinned", "pin_process"]

#: threads of PyTorch and MKL in the smoke profile: one, so that a stage's numbers never depend on the
#: cores, and stages run side by side instead (``make repro`` trains two at a time: the smoke tensors are
#: too small for a second thread to pay — one thread per stage was faster even alone, 19.7 s against
#: 22.5 s for two runs on 2 cores, and two such stages side by side took 11.8 s)
THREADS = 1

#: what every smoke-profile stage runs with
PINNED_ENVIRONMENT: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_NUM_THREADS": str(THREADS),
    "MKL_DYNAMIC": "FALSE",
    "OMP_NUM_THREADS": str(THREADS),
    "OMP_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "NPY_ENABLE_CPU_FEATURES": "X86_V3",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "PYTHONHASHSEED": "0",
    "DECONFLICT_PORTABLE": "1",
}
#: variables that would change the pinned kernels if a user had set them (removed when pinning)
CONFLICTING = ("NPY_DISABLE_CPU_FEATURES",)
OPT_OUT = "DECONFLICT_UNPINNED"


def is_pinned(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``environ`` (default: this process's) already has every pinned value."""
    environ = os.environ if environ is None else environ
    return all(environ.get(key) == value for key, value in PINNED_ENVIRONMENT.items()) and not any(
        key in environ for key in CONFLICTING
    )


def _active_profile(start: Path) -> str | None:
    """The root params' profile (None outside a checkout): read with PyYAML only, before NumPy/PyTorch."""
    from deconflict.config import find_repo_root, load_yaml  # imports neither NumPy nor PyTorch

    try:
        root = find_repo_root(start)
    except Exception:  # not inside a checkout: nothing to pin against
        return None
    return str(load_yaml(root / "params.yaml").get("profile", "smoke"))


def pin_process(argv: Sequence[str] | None = None, start: str | Path | None = None) -> None:
    """Under the smoke profile, re-execute this process with :data:`PINNED_ENVIRONMENT` unless it is
    pinned already (or ``DECONFLICT_UNPINNED=1``). Call it first in a stage entry point, before
    NumPy or PyTorch is imported (their kernels are chosen at import). ``argv``: the interpreter's
    arguments to re-execute with (default: this process's own, ``sys.orig_argv``, so that a script,
    ``-m module`` or ``-c code`` starts again the same way)."""
    if os.environ.get(OPT_OUT) == "1" or is_pinned():
        return
    profile = os.environ.get("DECONFLICT_PROFILE") or _active_profile(Path(start or Path.cwd()))
    args = list(sys.orig_argv[1:] if argv is None else argv)
    if "--profile" in args[:-1]:
        profile = args[args.index("--profile") + 1]
    if profile != "smoke":
        return
    environment = {key: value for key, value in os.environ.items() if key not in CONFLICTING}
    environment.update(PINNED_ENVIRONMENT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], environment)


def apply_torch_settings() -> None:
    """In a pinned process: convolutions through ATen's own kernels (oneDNN off) and the pinned
    thread count. Nothing otherwise."""
    if os.environ.get("DECONFLICT_PORTABLE") != "1":
        return
    import torch

    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(THREADS)


def cpu_vendor() -> str:
    """The CPU's vendor as the kernel reports it (``GenuineIntel``, ``AuthenticAMD``, ...), or the
    architecture where there is no ``/proc/cpuinfo`` vendor line (``arm64``, ...): the unit within which
    the smoke profile's numbers are bit for bit the same (see the module docstring)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.machine() or "unknown"
