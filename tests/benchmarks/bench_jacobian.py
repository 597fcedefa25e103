"""Benchmark (not a test): per-task gradients batched vs. looped, measured side by side.

    python tests/benchmarks/bench_jacobian.py [--repeats 20] [--device cpu|cuda]

For a small multi-task CNN with T = 3 and T = 40 heads, times the T×D Jacobian of the shared
parameters computed with one vmapped backward (``mode="batched"``) and with T backward passes
(``mode="loop"``), interleaved in the same run, and prints the medians and their ratio. It also
prints one plain backward of the summed loss (joint training) as the baseline cost, and which
backend ``mode="auto"`` picks on that model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from deconflict.grad import JacobianEngine, jacobian


class SmallCNN(nn.Module):
    def __init__(self, n_tasks: int, width: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.ModuleList(nn.Linear(2 * width, 1) for _ in range(n_tasks))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """One scalar per task, as a list: each task's backward pass then stays in its own branch."""
        z = self.trunk(x)
        return [((head(z).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(n_tasks: int, repeats: int, device: torch.device, batch: int = 16, size: int = 32) -> dict:
    torch.manual_seed(0)
    model = SmallCNN(n_tasks).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randn(batch, n_tasks, device=device)
    params = list(model.trunk.parameters())
    times = {"joint backward": [], "batched": [], "loop": []}

    def once(kind: str) -> float:
        sync(device)
        start = time.perf_counter()
        losses = model.losses(x, y)
        if kind == "joint backward":
            torch.autograd.grad(torch.stack(losses).sum(), params)
        else:
            jacobian(losses, params, mode=kind, retain_graph=False)
        sync(device)
        return time.perf_counter() - start

    for kind in times:  # warm-up
        once(kind)
    for _ in range(repeats):  # interleaved, so drift affects all three alike
        for kind in times:
            times[kind].append(once(kind))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    engine = JacobianEngine("auto")
    engine(model.losses(x, y), params, retain_graph=False)
    medians["auto"] = engine.resolved
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(
        f"device: {device} ({where}), torch {torch.__version__}, median of {args.repeats} interleaved repeats, "
        "forward included"
    )
    header = [
        "T",
        "joint backward (ms)",
        "batched (ms)",
        "loop (ms)",
        "loop / batched",
        "batched / joint",
        "auto picks",
    ]
    print(" | ".join(header))
    for n_tasks in (3, 40):
        result = measure(n_tasks, args.repeats, device)
        joint, batched, loop = (1e3 * result[k] for k in ("joint backward", "batched", "loop"))
        cells = [
            f"{n_tasks:>3}",
            f"{joint:>19.2f}",
            f"{batched:>12.2f}",
            f"{loop:>9.2f}",
            f"{loop / batched:>14.2f}",
            f"{batched / joint:>15.2f}",
            str(result["auto"]),
        ]
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
