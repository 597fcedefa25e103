"""Connection strength-based optimization (task-priority paper, Sec. 4): Eq. 4–7 by hand, Phase 2's
projection by hand, Phase 1 as sequential steps, the model with task-specific BN, and resumable phases."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from deconflict.data import NYUv2
from deconflict.errors import ConfigError, ShapeError
from deconflict.experiments import RunSpec, TrainingSettings, train_seed
from deconflict.methods import connection_strength as cs
from deconflict.tasks import TaskLoss
from deconflict.train import TrainConfig, Trainer


def test_priority_is_eq_4_to_7_by_hand():
    weight = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])  # N_O = 2, N_I = 1, K = 2
    gamma = torch.tensor([[1.0, 1.0], [2.0, 0.5]])  # tasks × N_O
    variance = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    eps = 1e-5
    s = [1.0, 4.0]  # Eq. 4: (1/K²) Σ W² = 4/4 and 16/4
    expected = []
    for t in range(2):
        strength = [gamma[t, p].item() ** 2 / (variance[t, p].item() + eps) * s[p] for p in range(2)]  # Eq. 6
        expected.append([value / sum(strength) for value in strength])  # Eq. 7
    got = cs.priority(weight, gamma, variance, eps=eps)
    assert got.flatten().tolist() == pytest.approx([v for row in expected for v in row], rel=1e-12)
    assert got.sum(1).tolist() == pytest.approx([1.0, 1.0])  # normalised over the layer's channels
    assert got.argmax(0).tolist() == [1, 0]  # Eq. 10: channel 0 belongs to task 1, channel 1 to task 0


def test_priority_rejects_mismatched_shapes():
    with pytest.raises(ShapeError, match="tasks × 3"):
        cs.priority(torch.ones(3, 2, 3, 3), torch.ones(2, 4), torch.ones(2, 4))


def test_phase_2_projects_only_the_conflicting_gradient_onto_the_reference_normal_plane():
    # two tasks, two channels of one parameter each
    gradients = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[-1.0, 1.0], [1.0, 2.0]]])  # tasks × N_O × 2
    # channel 0 → task 0 (reference [1, 0]; task 1's [-1, 1] conflicts → [0, 1]); channel 1 → task 1
    # (reference [1, 2]; task 0's [1, 1] agrees: unchanged)
    out = cs.project_groups(gradients, torch.tensor([0, 1]))
    assert out.tolist() == [[1.0, 1.0], [2.0, 3.0]]
    # the group of task 1 as reference: task 0's [1, 0] against [-1, 1] → [1, 0] + ½[-1, 1] = [½, ½]
    out = cs.project_groups(gradients[:, :1], torch.tensor([1]))
    assert out.tolist() == [[-0.5, 1.5]]
    # a group is one vector over all its channels: two channels, one projection
    group = cs.project_groups(gradients, torch.tensor([0, 0]))
    reference, other = gradients[0].flatten(), gradients[1].flatten()  # ⟨·,·⟩ = −1 + 0 + 1 + 2 = 2 ≥ 0
    assert group.flatten().tolist() == (reference + other).tolist()
    no_conflict = torch.tensor([[[1.0, 1.0]], [[2.0, 0.5]]])
    assert cs.project_groups(no_conflict, torch.tensor([0])).tolist() == [[3.0, 1.5]]


@pytest.fixture(scope="module")
def data_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    NYUv2.write_synthetic(base / "nyuv2", seed=0, train=8, val=4, size=(32, 64))
    return base


def split_model(seed: int = 0):
    torch.manual_seed(seed)
    return RunSpec("nyuv2", "split").build_model(width=1 / 16)


def test_task_specific_bn_computes_the_same_outputs_and_adds_only_batch_norms():
    model = split_model()
    pairs = cs.conv_bn_pairs(model)
    assert len(pairs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.backbone.modules())  # every shared conv
    branched = cs.task_specific_bn(model)
    x = torch.randn(2, 3, 32, 64)
    model.eval(), branched.eval()
    with torch.no_grad():
        plain = model.decode(model.encode(x))
        ours = branched.decode(branched.encode(x))
        alone = {name: branched.forward_task(x, t) for t, name in enumerate(branched.task_names)}
    for name in plain:
        torch.testing.assert_close(ours[name], plain[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(alone[name], plain[name], rtol=0, atol=1e-6)
    added = sum(p.numel() for p in branched.parameters()) - sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for _, name in pairs for p in model.get_submodule(name).parameters())
    assert added == (branched.num_tasks - 1) * bn  # one BN per task: the only new parameters
    shares = branched.strengths()
    assert [name for name, _ in shares] == [conv for conv, _ in pairs]
    assert all(s.shape == (3, model.get_submodule(n).out_channels) for n, s in shares)


def _batch(data_base):
    data = NYUv2(data_base / "nyuv2", "train")
    items = [data[i] for i in range(2)]
    inputs = torch.stack([x for x, _ in items])
    targets = {k: torch.stack([t[k] for _, t in items]) for k in items[0][1]}
    return inputs, targets


def _trainer(model, phases, lr=0.1, **options):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tasks = RunSpec("nyuv2", "split").tasks
    rule = cs.ConnectionStrengthUpdate(phases=phases, **options)
    return Trainer(model, TaskLoss(tasks), optimizer, "equal", update=rule, config=TrainConfig(epochs=2))


def test_phase_1_is_one_sgd_step_per_task_in_turn(data_base):
    inputs, targets = _batch(data_base)
    model = cs.task_specific_bn(split_model())
    reference = copy.deepcopy(model)
    trainer = _trainer(model, "phase1")
    trainer.rule.start_epoch(trainer)
    trainer.train_step((inputs, targets))
    tasks = {t.name: t for t in RunSpec("nyuv2", "split").tasks}
    for index, name in enumerate(reference.task_names):  # Eq. 9 by hand: θ ← θ − η ∇L_i(θ), task after task
        reference.zero_grad(set_to_none=True)
        tasks[name].loss(reference.forward_task(inputs, index), targets[name]).backward()
        with torch.no_grad():
            for p in reference.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=-0.1)  # SGD's own arithmetic (p -= 0.1 * g rounds differently)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6, msg=name)


def test_phase_2_updates_each_conv_by_its_projected_channel_groups(data_base):
    inputs, targets = _batch(data_base)
    model = cs.task_specific_bn(split_model())
    before = copy.deepcopy(model)
    trainer = _trainer(model, "phase2", lr=1.0)
    shared = trainer.parameter_split()[0]
    trainer.rule.start_epoch(trainer)
    # the task gradients the step will see (same parameters, same batch, training mode)
    probe = copy.deepcopy(before)
    outputs = probe.decode(probe.encode(inputs))
    losses = TaskLoss(RunSpec("nyuv2", "split").tasks)(outputs, targets)
    names = {id(p): n for n, p in model.named_parameters()}
    shared_names = [names[id(p)] for p in shared]
    params = dict(probe.named_parameters())
    wanted = [params[n] for n in shared_names]
    grads = [
        torch.autograd.grad(losses[name], wanted, retain_graph=True, allow_unused=True) for name in probe.task_names
    ]
    trainer.train_step((inputs, targets))
    after = dict(model.named_parameters())
    old = dict(before.named_parameters())
    for conv_name, strength in before.strengths():
        groups = strength.argmax(0)
        w = shared_names.index(f"inner.{conv_name}.weight")
        stacked = torch.stack([g[w] for g in grads])  # tasks × N_O × …
        with_bias = f"inner.{conv_name}.bias" in shared_names
        if with_bias:
            b = shared_names.index(f"inner.{conv_name}.bias")
            stacked = torch.cat([stacked.flatten(2), torch.stack([g[b] for g in grads]).unsqueeze(-1)], -1)
        expected = stacked.sum(0).flatten(1).clone()
        for i in range(stacked.shape[0]):  # the projection, written out
            members = groups == i
            if not members.any():
                continue
            block = stacked[:, members].reshape(stacked.shape[0], -1)
            total = block[i].clone()
            for j in range(stacked.shape[0]):
                if j != i:
                    inner = block[j].dot(block[i])
                    total += block[j] - (inner / block[i].dot(block[i]) * block[i] if inner < 0 else 0)
            expected[members] = total.reshape(int(members.sum()), -1)
        step = (old[f"inner.{conv_name}.weight"] - after[f"inner.{conv_name}.weight"]).flatten(1)
        n = step.shape[1]
        torch.testing.assert_close(step, expected[:, :n], rtol=1e-4, atol=1e-6)


def test_mixed_phases_are_drawn_per_epoch_and_a_resumed_run_draws_the_same(data_base, tmp_path):
    settings = TrainingSettings(model_options={"width": 1 / 16}, epochs=4, batch_size={"nyuv2": 4}, last_k=1)
    run = RunSpec.from_dict({"dataset": "nyuv2", "model": "split", "strength": {"seed": 3}})
    assert run.name == "nyuv2-split-equal-cs-seed_3"
    straight = train_seed(run, settings, 0, data_base=data_base, work_dir=tmp_path / "a", progress=False)
    phases = pd.DataFrame(straight.attrs["procedure"]["phases"])
    assert phases.groupby("epoch")["phase"].nunique().max() == 1  # one phase per epoch (Alg. 1)
    assert phases.iloc[0]["phase"] == 1  # e = 0: P > 0 always
    priorities = pd.DataFrame(straight.attrs["procedure"]["priorities"])
    assert priorities.groupby("epoch")["top_priority_percent"].sum().round(6).eq(100).all()
    again = train_seed(run, settings, 0, data_base=data_base, work_dir=tmp_path / "a", progress=False)
    pd.testing.assert_frame_equal(straight, again)  # resumed from the finished checkpoint


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strength": {"phases": "both"}}, "phases"),
        ({"strength": {"draw": "batch"}}, "draw"),
        ({"strength": {}, "method": "pcgrad"}, "its own update rule"),
        ({"strength": {}, "recon": {}}, "Recon"),
    ],
)
def test_bad_connection_strength_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        RunSpec.from_dict({"dataset": "nyuv2", "model": "split", **options})


def test_the_rule_refuses_a_model_without_task_specific_bn():
    model = split_model()
    with pytest.raises(ConfigError, match="task_specific_bn"):
        _trainer(model, "mixed")
