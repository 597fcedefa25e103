"""SegNet single/split, SegNet-MTAN and Cross-Stitch: sizes, outputs, parameter groups, gradients, losses."""

from __future__ import annotations

import pytest
import torch

from deconflict import models as model_registry
from deconflict.errors import ConfigError, InvalidHyperparameterError, ShapeError, UnknownNameError
from deconflict.grad import MultiTaskBackward
from deconflict.models import CrossStitchSegNet, SegNetBackbone, SegNetMTAN, SegNetSingle, SegNetSplit
from deconflict.tasks import TaskLoss, resolve
from deconflict.train import TrainConfig, Trainer

NYU = {"segmentation": 13, "depth": 1, "normal": 3}
CITY = {"segmentation": 7, "depth": 1}


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(build):
    with torch.device("meta"):
        return build()


# Parameter counts at the papers' width. Reference values: the MTAN / CAGrad / Nash-MTL model
# classes (checked equal, weight for weight, by loading their state into ours), and the sizes the
# papers print: Recon's "#P (MB)" = MiB of fp32 parameters (95.43, 95.58, 168.72, 190.59, 285.88),
# DR-MGF's relative #P 1.77 = MTAN / single-task SegNet.
@pytest.mark.parametrize(
    "build, parameters, mib",
    [
        (lambda: SegNetBackbone(), 24_943_296, None),
        (lambda: SegNetSingle({"segmentation": 13}), 24_981_069, 95.30),
        (lambda: SegNetSingle({"depth": 1}), 24_980_289, 95.29),
        (lambda: SegNetSplit(NYU), 25_055_185, 95.58),
        (lambda: SegNetSplit(CITY), 25_017_672, 95.43),
        (lambda: SegNetMTAN(NYU), 44_229_073, 168.72),
        (lambda: SegNetMTAN(CITY), 41_206_984, 157.19),
        (lambda: CrossStitchSegNet(NYU, stitch="mtan_code"), 74_941_804, 285.88),
        (lambda: CrossStitchSegNet(CITY, stitch="mtan_code"), 49_960_986, 190.59),
        (lambda: CrossStitchSegNet(NYU), 74_941_804 - 27 + 81, 285.88),
    ],
)
def test_full_width_parameter_counts_match_the_papers(build, parameters, mib):
    model = on_meta(build)
    assert count(model) == parameters
    if mib is not None:
        assert round(parameters * 4 / 2**20, 2) == mib


def test_mtan_relative_size_is_dr_mgf_177_and_shared_part_is_the_cagrad_split():
    mtan, single = on_meta(lambda: SegNetMTAN(NYU)), on_meta(lambda: SegNetSingle({"segmentation": 13}))
    assert round(count(mtan) / count(single), 2) == 1.77
    assert sum(p.numel() for p in mtan.shared_parameters()) == 35_163_456  # backbone + 10 shared attention blocks
    assert sum(p.numel() for p in mtan.downstream_shared_parameters()) == 10_220_160


def models(width=1 / 16, tasks=NYU):
    return [
        SegNetSplit(tasks, width),
        SegNetMTAN(tasks, width),
        CrossStitchSegNet(tasks, width),
        CrossStitchSegNet(tasks, width, stitch="mtan_code"),
    ]


@pytest.mark.parametrize("model", models(), ids=["split", "mtan", "cross_stitch", "cross_stitch_code"])
def test_outputs_and_parameter_groups(model):
    torch.manual_seed(0)
    model.eval()
    x = torch.rand(2, 3, 32, 64)
    out = model(x)
    assert out["segmentation"].shape == (2, 13, 32, 64) and out["depth"].shape == (2, 1, 32, 64)
    torch.testing.assert_close(out["segmentation"].exp().sum(1), torch.ones(2, 32, 64))
    norms = out["normal"].norm(dim=1)  # unit vectors (0 only where the head's output is exactly 0)
    assert (((norms - 1).abs() < 1e-5) | (norms == 0)).all() and (norms > 0).float().mean() > 0.9
    again = model.decode(model.encode(x))
    for task in out:
        assert torch.equal(out[task], again[task])
    shared = {id(p) for p in model.shared_parameters()}
    own = [{id(p) for p in group} for group in model.task_parameters()]
    everything = {id(p) for p in model.parameters()}
    assert shared.isdisjoint(set().union(*own)) and shared | set().union(*own) == everything
    assert all(a.isdisjoint(b) for i, a in enumerate(own) for b in own[i + 1 :])
    assert {id(p) for p in model.downstream_shared_parameters()} <= shared
    assert {id(p) for p in model.last_shared_parameters()} <= shared


@pytest.mark.parametrize("model", models(), ids=["split", "mtan", "cross_stitch", "cross_stitch_code"])
def test_a_task_loss_never_reaches_another_tasks_parameters(model):
    x = torch.rand(2, 3, 32, 32)
    outputs = model(x)
    groups = model.task_parameters()
    for t, task in enumerate(model.task_names):
        for u, group in enumerate(groups):
            if u == t:
                continue
            grads = torch.autograd.grad(outputs[task].sum(), group, retain_graph=True, allow_unused=True)
            assert all(g is None or not g.any() for g in grads)


def _targets(batch=2, height=32, width=32, tasks=NYU):
    generator = torch.Generator().manual_seed(1)
    out = {
        "segmentation": torch.randint(-1, tasks["segmentation"], (batch, height, width), generator=generator),
        "depth": torch.rand(batch, 1, height, width, generator=generator),
    }
    if "normal" in tasks:
        out["normal"] = torch.nn.functional.normalize(torch.randn(batch, 3, height, width, generator=generator), dim=1)
    return out


@pytest.mark.parametrize("level", ["parameter", "feature"])
@pytest.mark.parametrize("index", range(4), ids=["split", "mtan", "cross_stitch", "cross_stitch_code"])
def test_summing_the_task_gradients_equals_joint_backprop(index, level):
    """The representation is the whole interface between shared and task parts: aggregating the
    per-task gradients by their sum (at parameter or feature level) reproduces plain backprop of
    Σ_t L_t for every parameter, including MTAN's shared blocks after the representation."""
    torch.manual_seed(3)
    model = models()[index].double()
    x, targets = torch.rand(2, 3, 32, 32, dtype=torch.float64), _targets()
    targets = {k: v.double() if v.is_floating_point() else v for k, v in targets.items()}
    criterion = TaskLoss(model.tasks)
    model.zero_grad()
    losses = criterion(model(x), targets)
    sum(losses.values()).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    representation = model.encode(x)
    losses = criterion(model.decode(representation), targets)
    MultiTaskBackward("loop")(
        [losses[t] for t in model.task_names],
        model.shared_parameters(),
        model.task_parameters(),
        lambda jacobian: jacobian.sum(0),
        representation=representation if level == "feature" else None,
        downstream_shared=model.downstream_shared_parameters(),
    )
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)


def test_cross_stitch_forms():
    code = CrossStitchSegNet(NYU, 1 / 16, stitch="mtan_code")
    assert all(torch.equal(unit, torch.ones(3)) for unit in code.units)
    paper = CrossStitchSegNet(NYU, 1 / 16)
    expected = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    assert all(torch.allclose(unit, expected) for unit in paper.units)
    # with one scalar per source column, every column receives the same mixed input
    maps = [torch.rand(1, 2, 4, 4) for _ in range(3)]
    mixed = [code._mix(code.units[0], maps, t) for t in range(3)]
    assert torch.equal(mixed[0], mixed[1]) and torch.equal(mixed[1], mixed[2])
    with pytest.raises(ConfigError, match="matrix, mtan_code"):
        CrossStitchSegNet(NYU, stitch="identity")


def test_bad_configurations_are_named():
    with pytest.raises(InvalidHyperparameterError, match="width"):
        SegNetSplit(NYU, width=0)
    with pytest.raises(UnknownNameError, match="unknown task 'edges'; valid names: depth, normal, segmentation"):
        SegNetMTAN({"edges": 1})
    with pytest.raises(ConfigError, match="normal has 3 output channel"):
        SegNetSplit({"normal": 4})
    with pytest.raises(ConfigError, match="exactly one task"):
        SegNetSingle(NYU)
    with pytest.raises(ShapeError, match="multiples of 32"):
        SegNetSplit(NYU, 1 / 16)(torch.rand(1, 3, 48, 64))
    with pytest.raises(ShapeError, match="B×3×H×W"):
        SegNetMTAN(NYU, 1 / 16)(torch.rand(3, 32, 32))


def test_rotograd_needs_one_feature_map():
    for model in (SegNetMTAN(NYU, 1 / 16), CrossStitchSegNet(NYU, 1 / 16)):
        with pytest.raises(ConfigError, match="SegNetSplit"):
            Trainer(
                model,
                TaskLoss(resolve(NYU)),
                torch.optim.Adam(model.parameters()),
                "rotograd",
                config=TrainConfig(level="feature", progress=False, log_every=0),
            )
    split = SegNetSplit(NYU, 1 / 16)
    trainer = Trainer(
        split,
        TaskLoss(resolve(NYU)),
        torch.optim.Adam(split.parameters()),
        "rotograd",
        config=TrainConfig(level="feature", progress=False, log_every=0),
    )
    output = trainer.train_step((torch.rand(2, 3, 32, 32), _targets()))
    assert torch.isfinite(output.losses).all()


def test_models_are_found_by_name():
    assert {"single", "split", "mtan", "cross_stitch"} <= set(model_registry.available())
    model = model_registry.get("mtan", tasks=NYU, width=1 / 16)
    assert isinstance(model, SegNetMTAN) and model.task_names == ("segmentation", "depth", "normal")
    assert [task.channels for task in model.tasks] == [13, 1, 3]
    with pytest.raises(UnknownNameError, match="unknown model 'unet'; valid names: .*cross_stitch.*mtan"):
        model_registry.get("unet", tasks=NYU)
