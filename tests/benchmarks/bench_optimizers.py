"""Benchmark (not a test): step time of every method over joint training's, and the same for TorchJD.

    python tests/benchmarks/bench_optimizers.py [--rounds 7] [--only nyuv2|celeba|mtan] [--device cpu|cuda]

Three workloads, one model and one batch each, every method trained on the same data:
(a) a 3-task SegNet-like conv net on NYUv2-shaped input (segmentation 13 classes, depth, normals;
    quarter resolution 72×96 on the CPU, batch 2), (b) a 40-task conv net on CelebA-shaped input
    (64×64, batch 16, 40 binary attributes), (c) the project's SegNet-MTAN (quarter width,
    NYUv2-shaped 96×128, batch 2; ours only: TorchJD has no counterpart for its shared attention
    blocks after the representation). For each method and level it reports the median time
    of a full training step (forward, the method's backward, optimizer step, and any extra pass the
    method needs) divided by joint training's median, measured in interleaved rounds so that drift
    affects all alike; beside it the same ratio for TorchJD's implementation of that method
    (``torchjd.autojac.mtl_backward`` + ``jac_to_grad`` for aggregators, its scalarizers for loss
    weightings), each over its own joint-training step (ours: the Trainer; TorchJD: a plain loop).
    Targets: ours ≤ TorchJD for every shared method; feature level ≤ 1.3× joint.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deconflict import optim
from deconflict.errors import ConfigError
from deconflict.models import MultiTaskModel, SegNetMTAN
from deconflict.tasks import TaskLoss
from deconflict.train import TrainConfig, Trainer

warnings.filterwarnings("ignore")


# -- workloads ----------------------------------------------------------------------------------
class SmallSegNet(MultiTaskModel):
    """Encoder-decoder with three dense heads; the representation is the decoder's last feature map."""

    task_names = ("segmentation", "depth", "normal")

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.encoder = nn.Sequential(
            block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w)
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2), block(4 * w, 2 * w), nn.Upsample(scale_factor=2), block(2 * w, w)
        )
        self.heads = nn.ModuleList([nn.Conv2d(w, 13, 1), nn.Conv2d(w, 1, 1), nn.Conv2d(w, 3, 1)])

    def encode(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        return self.decode_tasks([z, z, z])

    def decode_tasks(self, views) -> dict[str, Tensor]:
        seg, depth, normal = (head(view) for head, view in zip(self.heads, views))
        return {"segmentation": seg, "depth": depth, "normal": F.normalize(normal, dim=1)}

    def shared_parameters(self):
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def task_parameters(self):
        return [list(head.parameters()) for head in self.heads]

    def last_shared_parameters(self):
        return list(self.decoder[-1][0].parameters())


def nyuv2_losses(outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
    seg = F.cross_entropy(outputs["segmentation"], targets["segmentation"], ignore_index=-1)
    depth = (outputs["depth"] - targets["depth"]).abs().mean()
    normal = 1 - (outputs["normal"] * targets["normal"]).sum(1).mean()
    return [seg, depth, normal]  # a list: TorchJD differentiates each loss separately


class CelebANet(MultiTaskModel):
    """Four conv blocks to a 128-d representation, 40 linear binary heads."""

    def __init__(self, n_tasks: int = 40) -> None:
        super().__init__()
        self.task_names = tuple(f"attribute{i}" for i in range(n_tasks))
        layers, cin = [], 3
        for cout in (32, 64, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(128, 1) for _ in range(n_tasks))

    def encode(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        return self.decode_tasks([z] * len(self.heads))

    def decode_tasks(self, views) -> dict[str, Tensor]:
        return {name: head(view).squeeze(-1) for name, head, view in zip(self.task_names, self.heads, views)}

    def shared_parameters(self):
        return list(self.backbone.parameters())

    def task_parameters(self):
        return [list(head.parameters()) for head in self.heads]

    def last_shared_parameters(self):
        return list(self.backbone[-6].parameters())  # the last conv


def celeba_losses(outputs: dict[str, Tensor], targets: Tensor) -> Tensor:
    return [F.binary_cross_entropy_with_logits(o, targets[:, i]) for i, o in enumerate(outputs.values())]


def nyuv2_batch(h: int, w: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """A batch of two NYUv2-shaped items (random image, labels with ignore, depth, unit normals)."""
    targets = {
        "segmentation": torch.randint(-1, 13, (2, h, w), generator=generator),
        "depth": torch.rand(2, 1, h, w, generator=generator),
        "normal": F.normalize(torch.randn(2, 3, h, w, generator=generator), dim=1),
    }
    return torch.randn(2, 3, h, w, generator=generator), targets


def workload(name: str, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "nyuv2":
        return (
            SmallSegNet(),
            nyuv2_losses,
            nyuv2_batch(72, 96, generator),
            "3-task SegNet-like, NYUv2-shaped 3×72×96 (¼ resolution), batch 2",
        )
    if name == "mtan":
        model = SegNetMTAN({"segmentation": 13, "depth": 1, "normal": 3}, width=0.25)
        return (
            model,
            TaskLoss(model.tasks),
            nyuv2_batch(96, 128, generator),
            "SegNet-MTAN (width 0.25), NYUv2-shaped 3×96×128, batch 2",
        )
    model = CelebANet()
    batch = (torch.randn(16, 3, 64, 64, generator=generator), (torch.rand(16, 40, generator=generator) > 0.5).float())
    return model, celeba_losses, batch, "40-task conv net, CelebA-shaped 3×64×64, batch 16"


# -- steppers -------------------------------------------------------------------------------------
def to_device(batch, device):
    inputs, targets = batch
    targets = {k: v.to(device) for k, v in targets.items()} if isinstance(targets, dict) else targets.to(device)
    return inputs.to(device), targets


def ours(model, criterion, name: str, level: str) -> Callable[[object], None]:
    hparams = {"weights": [1.0] * model.num_tasks} if name == "fixed" else {}
    trainer = Trainer(
        model,
        criterion,
        torch.optim.Adam(model.parameters(), lr=1e-4),
        optim.get(name, **hparams),
        config=TrainConfig(level=level, progress=False, log_every=0),
    )
    return trainer.train_step


TORCHJD_AGGREGATORS = {
    "mgda": lambda T: __import__("torchjd.aggregation", fromlist=["MGDA"]).MGDA(),
    "pcgrad": lambda T: __import__("torchjd.aggregation", fromlist=["PCGrad"]).PCGrad(),
    "cagrad": lambda T: __import__("torchjd.aggregation", fromlist=["CAGrad"]).CAGrad(c=0.5),
    "nash_mtl": lambda T: __import__("torchjd.aggregation", fromlist=["NashMTL"]).NashMTL(
        n_tasks=T, max_norm=0.0, update_weights_every=1, optim_niter=20
    ),
    "imtl_g": lambda T: __import__("torchjd.aggregation", fromlist=["IMTLG"]).IMTLG(),
    "aligned_mtl": lambda T: __import__("torchjd.aggregation", fromlist=["AlignedMTL"]).AlignedMTL(
        pref_vector=torch.ones(T)
    ),
    "graddrop": lambda T: __import__("torchjd.aggregation", fromlist=["GradDrop"]).GradDrop(),
    "gradvac": lambda T: __import__("torchjd.aggregation", fromlist=["GradVac"]).GradVac(),
    "rgw": lambda T: __import__("torchjd.aggregation", fromlist=["Random"]).Random(),
}
TORCHJD_SCALARIZERS = {"uw": "UW", "dwa": "DWA", "famo": "FAMO", "imtl_l": "IMTLL"}


def torchjd_step(model, criterion, name: str) -> Callable[[object], None] | None:
    from torchjd.autojac import jac_to_grad, mtl_backward

    n_tasks = model.num_tasks
    if name == "equal":  # the peers' joint training: a plain loop, the denominator of their ratios
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(batch):
            inputs, targets = to_device(batch, next(model.parameters()).device)
            optimizer.zero_grad()
            torch.stack(criterion(model(inputs), targets)).sum().backward()
            optimizer.step()

        return step
    if name in TORCHJD_AGGREGATORS:
        aggregator = TORCHJD_AGGREGATORS[name](n_tasks)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(batch):
            inputs, targets = to_device(batch, next(model.parameters()).device)
            optimizer.zero_grad()
            z = model.encode(inputs)
            losses = criterion(model.decode(z), targets)
            mtl_backward(
                losses, features=z, shared_params=model.shared_parameters(), tasks_params=model.task_parameters()
            )
            jac_to_grad(model.shared_parameters(), aggregator)
            optimizer.step()

        return step
    if name in TORCHJD_SCALARIZERS:
        import torchjd.scalarization as scalarization

        cls = getattr(scalarization, TORCHJD_SCALARIZERS[name])
        scalarizer = cls() if name == "dwa" else cls(n_tasks)
        optimizer = torch.optim.Adam(
            list(model.parameters()) + (list(scalarizer.parameters()) if name != "famo" else []), lr=1e-4
        )

        def step(batch):
            inputs, targets = to_device(batch, next(model.parameters()).device)
            optimizer.zero_grad()
            losses = torch.stack(criterion(model(inputs), targets))
            scalarizer(losses).backward()
            optimizer.step()
            if name == "famo":
                with torch.no_grad():
                    scalarizer.update(torch.stack(criterion(model(inputs), targets)))

        return step
    return None


# -- measurement ----------------------------------------------------------------------------------
def run(name: str, rounds: int, device: torch.device) -> None:
    model, criterion, batch, description = workload(name, device)
    model.to(device)
    batch = to_device(batch, device)
    state = copy.deepcopy(model.state_dict())
    entries: dict[tuple[str, str, str], Callable] = {}
    skipped: list[str] = []
    for method in optim.available():
        for level in optim.method_class(method).levels:
            cls = optim.method_class(method)
            if cls.category == "weighting" and level == "feature" and "task_gradients" not in cls.needs:
                continue  # a loss weighting that does not look at gradients is the same at both levels
            replica = copy.deepcopy(model)
            replica.load_state_dict(state)
            try:
                entries[("ours", method, level)] = ours(replica, criterion, method, level)
            except ConfigError as error:  # e.g. RotoGrad on a model without one shared feature map
                skipped.append(f"{method} ({level}): {error}")
        replica = copy.deepcopy(model)
        step = torchjd_step(replica, criterion, method) if name != "mtan" else None
        if step is not None:
            entries[("torchjd", method, "parameter")] = step
    times = {key: [] for key in entries}
    for _ in range(2):  # warm-up (also lets "auto" pick its Jacobian backend)
        for step in entries.values():
            step(batch)
    for _ in range(rounds):
        for key, step in entries.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in times.items()}
    joint = median[("ours", "equal", "parameter")]
    peer_joint = median.get(("torchjd", "equal", "parameter"))
    plain = f", {1e3 * peer_joint:.1f} ms in a plain loop" if peer_joint else ""
    print(
        f"\n## {description} — joint training step {1e3 * joint:.1f} ms with our Trainer{plain} "
        f"(median of {rounds}, {device})\n"
    )
    print("| method | level | ours / our joint | TorchJD / plain-loop joint | ours vs TorchJD (2 % noise band) |")
    print("|---|---|---|---|---|")
    for method in optim.available():
        for level in ("parameter", "feature"):
            key = ("ours", method, level)
            if key not in median:
                continue
            ratio = median[key] / joint
            peer = median.get(("torchjd", method, "parameter")) if level == "parameter" and method != "equal" else None
            peer_ratio = peer / peer_joint if peer else None
            peer_text = f"{peer_ratio:.2f}" if peer else "—"
            verdict = ("not slower" if ratio <= peer_ratio * 1.02 else "SLOWER") if peer else ""
            flag = " (over 1.3)" if level == "feature" and ratio > 1.3 else ""
            print(f"| {method} | {level} | {ratio:.2f}{flag} | {peer_text} | {verdict} |")
    for line in skipped:
        print(f"\nnot run: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("nyuv2", "celeba", "mtan"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in ("nyuv2", "celeba", "mtan"):
        if args.only in (None, name):
            run(name, args.rounds, device)


if __name__ == "__main__":
    main()
