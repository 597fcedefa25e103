"""Recon (Shi et al., ICLR 2023): the layers it may split, its S-conflict ranking, and its surgery.

What the paper claims of the surgery (Alg. 1, "set them task-specific") and what the issue asks of it:
the branched model computes the original's outputs at initialisation, and the gradient of task t's loss
w.r.t. its copy of a layer is the original per-task gradient w.r.t. that layer.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from deconflict import models
from deconflict.data import DATASETS
from deconflict.errors import ConfigError
from deconflict.methods import recon
from deconflict.optim import get as get_method
from deconflict.train import GradientMonitor, TrainConfig, Trainer
from deconflict.train.monitors import layer_slices
from tests.architectures import MLPMultiTask, regression_losses

DENSE = [("split", {}), ("mtan", {}), ("cross_stitch", {"stitch": "mtan_code"}), ("cross_stitch", {})]


def dense_model(name: str, options: dict, dataset: str = "nyuv2") -> models.MultiTaskModel:
    return models.get(name, tasks=DATASETS[dataset].tasks(), width=0.125, **options).double()


def task_objectives(outputs: dict[str, Tensor], seed: int = 1) -> list[Tensor]:
    """A fixed, non-trivial scalar per task (random projections of each output)."""
    generator = torch.Generator().manual_seed(seed)
    return [(out * torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum() for out in outputs.values()]


# -- which layers ---------------------------------------------------------------------------------
def test_the_layers_of_split_segnet_are_its_backbone_convs_and_batchnorms_in_forward_order():
    model = dense_model("split", {})
    layers = recon.conflict_layers(model)
    convs_and_bns = [n for n, m in model.backbone.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert sorted(layers) == sorted(f"backbone.{n}" for n in convs_and_bns)
    assert len(layers) == 52  # 26 conv blocks, each a conv and a BatchNorm layer
    assert layers.index("backbone.encoder_first.0.0") == 0
    assert layers.index("backbone.encoder_first.4.0") < layers.index("backbone.decoder_first.4.0")
    assert layers[-1] == "backbone.decoder_rest.0.0.1"  # the last BatchNorm before the heads


def test_mtans_layers_follow_the_forward_pass_not_the_registration_order():
    layers = recon.conflict_layers(dense_model("mtan", {}))
    assert len(layers) == 72  # the official NYUv2 ranking lists 72 layers (official_code.md §3.2)
    # the shared decoder blocks g_s run from the deepest stage up: g_4 before g_0
    assert layers.index("decoder_shared.4.0") < layers.index("decoder_shared.0.0")
    assert not any("gates" in name or "heads" in name for name in layers)


@pytest.mark.parametrize("name, options", DENSE)
def test_the_layer_names_are_those_of_the_pre_runs_table(name, options):
    """S-conflict scores come from GradientMonitor's per-layer table: the names must match."""
    model = dense_model(name, options)
    named = {id(p): n for n, p in model.named_parameters()}
    monitored = [layer for layer, _ in layer_slices([(named[id(p)], p.numel()) for p in model.shared_parameters()])]
    layers = recon.conflict_layers(model)
    assert set(layers) <= set(monitored)
    # what is monitored but not a layer is only Cross-Stitch's bare units (not branchable by module surgery)
    assert set(monitored) - set(layers) <= {"units", "last_unit"}


# -- the surgery ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", DENSE)
def test_a_branched_model_computes_the_originals_outputs_and_per_task_gradients(name, options):
    model = dense_model(name, options)
    layers = recon.conflict_layers(model)
    chosen = [layers[1], layers[len(layers) // 2], layers[-2]]
    branched = recon.branch(model, chosen)
    inputs = torch.randn(2, 3, 32, 64, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.named_parameters()}
    original, surgical = model(inputs), branched(inputs)
    for task in model.task_names:
        torch.testing.assert_close(surgical[task], original[task], rtol=0, atol=1e-12)
    objectives, surgical_objectives = task_objectives(original), task_objectives(surgical)
    for t, objective in enumerate(objectives):
        for layer in chosen:
            own = list(model.get_submodule(layer).parameters())
            expected = torch.autograd.grad(objective, own, retain_graph=True)
            copy_t = list(branched.inner.get_submodule(layer).copies[t].parameters())
            got = torch.autograd.grad(surgical_objectives[t], copy_t, retain_graph=True)
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    for key, value in model.named_parameters():  # the model given is not changed
        assert value is not dict(branched.named_parameters()).get(f"inner.{key}")
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_a_branched_model_splits_its_parameters_into_shared_and_per_task_groups():
    model = dense_model("mtan", {})
    layers = recon.conflict_layers(model)
    chosen = layers[-5:]
    branched = recon.branch(model, chosen)
    size = sum(p.numel() for layer in chosen for p in model.get_submodule(layer).parameters())
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in branched.parameters()) == total + (model.num_tasks - 1) * size
    shared = {id(p) for p in branched.shared_parameters()}
    groups = [{id(p) for p in group} for group in branched.task_parameters()]
    every = {id(p) for p in branched.parameters()}
    assert shared | set().union(*groups) == every
    assert all(not (shared & group) for group in groups)
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1 :])
    for t, group in enumerate(groups):
        for layer in chosen:
            assert {id(p) for p in branched.inner.get_submodule(layer).copies[t].parameters()} <= group
    assert (
        sum(p.numel() for p in branched.shared_parameters()) == sum(p.numel() for p in model.shared_parameters()) - size
    )
    assert {id(p) for p in branched.downstream_shared_parameters()} <= shared
    assert branched.last_shared_parameters()  # the last shared layer was branched: the one before it


def test_independent_copies_are_reinitialised_like_the_official_code():
    model = dense_model("split", {})
    layer = recon.conflict_layers(model)[0]  # a conv
    torch.manual_seed(3)
    branched = recon.branch(model, [layer], copies="independent")
    weights = [c.weight for c in branched.inner.get_submodule(layer).copies]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], model.get_submodule(layer).weight)
    assert all(
        float(c.bias.detach().abs().max()) == 0.0 for c in branched.inner.get_submodule(layer).copies
    )  # SegNet init


def test_branching_rejects_what_is_not_a_shared_layer():
    model = dense_model("split", {})
    with pytest.raises(ConfigError, match="conflict_layers"):
        recon.branch(model, ["heads.depth.0"])
    with pytest.raises(ConfigError, match="at least one"):
        recon.branch(model, [])
    with pytest.raises(ConfigError, match="identical"):
        recon.branch(model, recon.conflict_layers(model)[:1], copies="fresh")


def test_a_branched_model_trains_and_its_copies_part_ways():
    torch.manual_seed(0)
    model = MLPMultiTask(n_tasks=3)
    branched = recon.branch(model, ["trunk.2"])
    trainer = Trainer(
        branched,
        regression_losses,
        torch.optim.SGD(branched.parameters(), lr=0.1),
        "pcgrad",
        config=TrainConfig(epochs=1, progress=False, log_every=0),
    )
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 5, generator=generator), torch.randn(8, 3, generator=generator)) for _ in range(3)]
    trainer.fit(lambda epoch: data)
    copies = branched.inner.get_submodule("trunk.2").copies
    assert not torch.equal(copies[0].weight, copies[1].weight)
    assert not torch.equal(copies[1].weight, copies[2].weight)


# -- the S-conflict score -------------------------------------------------------------------------
class OneConflictingLayer(MLPMultiTask):
    """Two shared layers: the tasks pull ``conflicting`` in opposite directions and ``agreeing`` in one."""

    def __init__(self) -> None:
        super().__init__(n_tasks=2)
        self.trunk = nn.ModuleDict({"agreeing": nn.Linear(5, 3), "conflicting": nn.Linear(5, 3)})

    def encode(self, inputs: Tensor) -> Tensor:
        return torch.cat([self.trunk["agreeing"](inputs), self.trunk["conflicting"](inputs)], dim=1)

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        agree, conflict = representation[:, :3].sum(1), representation[:, 3:].sum(1)
        return {"t0": agree + conflict, "t1": agree - conflict}

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def task_parameters(self):
        return [[], []]


def test_the_s_conflict_score_ranks_a_constructed_conflicting_layer_first():
    torch.manual_seed(0)
    model = OneConflictingLayer()
    monitor = GradientMonitor(every=1, per_layer=True)
    trainer = Trainer(
        model,
        lambda outputs, targets: torch.stack([outputs["t0"].mean(), outputs["t1"].mean()]),
        torch.optim.SGD(model.parameters(), lr=0.01),
        "equal",
        config=TrainConfig(epochs=1, progress=False, log_every=0),
        callbacks=[monitor],
    )
    trainer.fit(lambda epoch: [(torch.rand(4, 5) + 0.5, None) for _ in range(5)])
    scores = recon.conflict_scores(monitor.pairs(), threshold=0.0)
    assert scores.to_dict() == {"trunk.agreeing": 0, "trunk.conflicting": 5}  # one pair, 5 iterations
    assert recon.select_layers(scores, 1) == ["trunk.conflicting"]
    assert recon.conflict_scores(monitor.pairs(), 0.0, iterations=(2, 3))["trunk.conflicting"] == 2


# -- the controls ---------------------------------------------------------------------------------
def test_the_controls_pick_what_their_names_say():
    layers = [f"l{i}" for i in range(10)]
    assert recon.first_layers(layers, 3) == ["l0", "l1", "l2"]
    assert recon.last_layers(layers, 3) == ["l7", "l8", "l9"]
    rsl = recon.random_layers(layers, 4, seed=0)
    assert len(rsl) == 4 and rsl == sorted(rsl, key=layers.index)
    assert rsl == recon.random_layers(layers, 4, seed=0) != recon.random_layers(layers, 4, seed=1)
    sizes = {name: 10 * (i + 1) for i, name in enumerate(layers)}  # 10 … 100, 550 in all
    rsp = recon.random_parameter_layers(sizes, 200, seed=0)
    assert abs(sum(sizes[n] for n in rsp) - 200) <= 10
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ConfigError, match="K must be"):
            recon.first_layers(layers, bad)


def test_select_layers_breaks_ties_by_forward_order():
    import pandas as pd

    scores = pd.Series({"a": 1, "b": 3, "c": 3, "d": 0})
    assert recon.select_layers(scores, 3) == ["b", "c", "a"]


def test_the_settings_are_app_b_and_the_official_scripts():
    paper, code = recon.SETTINGS["paper"], recon.SETTINGS["code"]
    assert (paper["cityscapes"].threshold, paper["cityscapes"].top_k, paper["cityscapes"].prerun_epochs) == (
        0.0,
        39,
        40,
    )
    assert (paper["nyuv2"].threshold, paper["nyuv2"].top_k) == (-0.02, 22)
    assert (code["nyuv2"].top_k, code["nyuv2"].prerun_epochs) == (15, 50)
    assert paper["multi_fashion"].base == "cagrad" and get_method(paper["multi_fashion"].base)
