"""What an epoch of DR-MGF, DR-avgF and Meta-GF costs beside an epoch of joint training (DR-MGF Table 7 and
Fig. 11 are about this): wall time of whole epochs of SegNet-MTAN, measured side by side in one run.

    python tests/benchmarks/bench_fusion_epoch.py                     # width 0.25, 3×96×128, 8 batches of 2
    python tests/benchmarks/bench_fusion_epoch.py --width 1 --size 288 384 --device cuda   # the paper's size

Every variant trains the same model from the same weights on the same batches (NYUv2-shaped random
tensors), for ``--epochs`` epochs after one warm-up epoch, in interleaved rounds; the script prints the
median seconds per epoch and its ratio to joint training. An epoch of the procedures is K = 3 passes of
the task objective (one backward pass of every task's loss each) plus a fusion pass (DR-MGF, Meta-GF:
forward and backward through the fused weights to the fusion variables; DR-avgF: forward only), so the
floor of the ratio is about K + 1 for DR-MGF and Meta-GF and K + ⅓ for DR-avgF.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()

import argparse
import statistics
import time

import torch

from deconflict.data import NYUv2
from deconflict.methods.drmgf import DRMGFUpdate
from deconflict.methods.metagf import MULTITASK_CODE, MetaGFUpdate
from deconflict.models import get as get_model
from deconflict.portable import apply_torch_settings
from deconflict.tasks import TaskLoss
from deconflict.train import TrainConfig, Trainer

ADAM = {"name": "adam", "lr": 1e-4}
VARIANTS = {
    "joint": lambda: None,
    "DR-MGF": lambda: DRMGFUpdate(nu_optimizer=ADAM),
    "DR-avgF": lambda: DRMGFUpdate(nu_optimizer=ADAM, fusion="average"),
    "Meta-GF": lambda: MetaGFUpdate(**MULTITASK_CODE),
}


def batches(count: int, batch: int, size: tuple[int, int], device: str) -> list:
    generator = torch.Generator().manual_seed(0)
    h, w = size
    out = []
    for _ in range(count):
        targets = {
            "segmentation": torch.randint(0, 13, (batch, h, w), generator=generator),
            "depth": torch.rand(batch, 1, h, w, generator=generator) + 0.5,
            "normal": torch.nn.functional.normalize(torch.randn(batch, 3, h, w, generator=generator), dim=1),
        }
        out.append(
            (torch.rand(batch, 3, h, w, generator=generator).to(device), {k: v.to(device) for k, v in targets.items()})
        )
    return out


def epoch_time(variant: str, data: list, width: float, epochs: int, device: str) -> float:
    torch.manual_seed(0)
    tasks = NYUv2.tasks()
    model = get_model("mtan", tasks=tasks, width=width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    trainer = Trainer(
        model,
        TaskLoss(tasks),
        optimizer,
        "equal",
        update=VARIANTS[variant](),
        config=TrainConfig(epochs=epochs + 1, progress=False, log_every=0),
    )
    marks: list[float] = []

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    started = [0.0]  # an epoch runs from the rule's start_epoch to its end_epoch (both passes of a procedure)
    original = trainer.rule.start_epoch

    def timed_start(t):
        sync()
        started[0] = time.perf_counter()
        original(t)

    trainer.rule.start_epoch = timed_start
    end = trainer.rule.end_epoch

    def timed_end(t):
        end(t)
        sync()
        marks.append(time.perf_counter() - started[0])

    trainer.rule.end_epoch = timed_end
    trainer.fit(data)
    return statistics.median(marks[1:])  # the first epoch warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=8, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    apply_torch_settings()
    data = batches(args.batches, args.batch, tuple(args.size), args.device)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            times[name].append(epoch_time(name, data, args.width, args.epochs, args.device))
    print(
        f"SegNet-MTAN width {args.width}, 3×{args.size[0]}×{args.size[1]}, {args.batches} batches of {args.batch}, "
        f"device {args.device}; median of {args.rounds} rounds × {args.epochs} epochs"
    )
    base = statistics.median(times["joint"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:8s} {median:7.3f} s/epoch  ×{median / base:.2f} of joint training")


if __name__ == "__main__":
    main()
