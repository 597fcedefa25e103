"""DR-MGF and Meta-GF (deconflict.methods.drmgf / metagf / fusion): Eq. 5, 6, 8, 9 and 10 by hand, one
epoch of the procedure against an independent computation, fusion with equal ν equals averaging,
learning, bit-identical resume after a kill in either stage, and the pruning analysis of Fig. 14(a)."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deconflict.data import NYUv2
from deconflict.errors import ConfigError
from deconflict.experiments import RunSpec, TrainingSettings, train_seed
from deconflict.methods import drmgf, fusion, metagf
from deconflict.train import TrainConfig, Trainer
from tests.architectures import ConvBNMultiTask, regression_losses

FROZEN = {"name": "sgd", "lr": 0.0}


def test_lateral_normalisation_is_eq_6_and_the_code_lrn_by_hand():
    nu = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    eps = 1e-5
    got = drmgf.lateral_normalise(nu, "paper", eps)
    assert got[0].tolist() == pytest.approx([1 / math.sqrt(eps + 0.4), 3 / math.sqrt(eps + 0.4)], rel=1e-7)
    assert got[1].tolist() == pytest.approx([2 / math.sqrt(eps + 0.4)] * 2, rel=1e-7)
    lrn = drmgf.lateral_normalise(nu, "lrn")
    assert lrn[0, 1].item() == pytest.approx(3 / (1 + 4e-4) ** 0.75, rel=1e-7)


def test_routed_filters_are_eq_5_unit_filters_scaled_by_their_route():
    weight = torch.randn(3, 2, 3, 3)
    route = torch.tensor([[0.5, 2.0], [1.0, 3.0], [0.25, 1.5]])
    routed = drmgf.routed_weight(weight, route)
    norms = routed.flatten(2).norm(dim=-1)
    assert norms.flatten().tolist() == pytest.approx(route.flatten().tolist(), rel=1e-6)
    cosine = F.cosine_similarity(routed.flatten(2), weight.flatten(2), dim=-1)
    assert cosine.min().item() == pytest.approx(1.0, abs=1e-6)  # directions kept


def test_fusion_weights_are_eq_8_by_hand():
    nu = torch.tensor([[[1.0, 3.0]], [[3.0, 1.0]]])  # K = 2, m = 1, n = 2
    prime = torch.stack([drmgf.fusion_normalise(v) for v in nu])
    assert prime.flatten().tolist() == [0.25, 0.75, 0.75, 0.25]
    results = torch.tensor([[[2.0, 4.0]], [[6.0, 8.0]]])
    fused = fusion.fuse(results, prime)
    assert fused.flatten().tolist() == [0.25 * 2 + 0.75 * 6, 0.75 * 4 + 0.25 * 8]  # Σ ν′ g / Σ ν′ (Σ ν′ = 1)
    assert fusion.fuse(results, None).flatten().tolist() == [4.0, 6.0]


def test_disentanglement_objective_is_eq_10():
    c = fusion.objective_coefficients(["a", "b", "c"], 0.4, {"c": 10})
    assert c.flatten().tolist() == pytest.approx([1, 0.4, 4.0, 0.4, 1, 4.0, 0.4, 0.4, 10])
    with pytest.raises(ConfigError, match="unknown tasks"):
        fusion.objective_coefficients(["a"], 0.4, {"z": 1})


def test_important_connections_take_the_largest_weight_with_a_margin():
    weights = torch.tensor([[[0.5, 0.2, 0.45]], [[0.3, 0.6, 0.44]]])
    assert drmgf.important_connections(weights).tolist() == [[0, 1, 0]]
    assert drmgf.important_connections(weights, ratio=1.1).tolist() == [[0, 1, -1]]


# -- the procedure on a small convolutional network --------------------------------------------------
class Net(ConvBNMultiTask):
    def __init__(self) -> None:
        super().__init__(2)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0)) for _ in range(2)
        )


def batches(count: int = 3, size: int = 4, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(size, 3, 6, 6, generator=generator)
        out.append((x, torch.stack([x.mean((1, 2, 3)), x[:, 0].std((1, 2))], 1)))
    return out


def trainer(rule, model=None, lr=0.01, run_dir=None, epochs=1, optimizer="sgd", criterion=regression_losses):
    torch.manual_seed(0)
    model = model or Net()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    config = TrainConfig(epochs=epochs, progress=False, log_every=0)
    return Trainer(model, criterion, opt, update=rule, config=config, run_dir=run_dir)


def independent_epoch(model: Net, nu: dict[str, list[torch.Tensor]], data, beta: float, lr: float, eps: float):
    """One DR-MGF epoch with ν fixed, written out from Eq. 5–10 (SGD, no momentum)."""
    theta0 = copy.deepcopy(model.state_dict())
    routed = list(nu)
    results = []
    for k in range(2):
        net = copy.deepcopy(model)
        net.load_state_dict(theta0)
        net.train()
        params = dict(net.named_parameters())
        for x, y in data:
            effective = {}
            for name in routed:
                w = params[name]
                v = nu[name][k].abs()
                route = v / (eps + 0.1 * v.sum(-1, keepdim=True)) ** 0.5  # Eq. 6
                m, n = v.shape
                effective[name] = (F.normalize(w.reshape(m, n, -1), dim=-1) * route[..., None]).reshape(w.shape)
            outputs = torch.func.functional_call(net, effective, (x,))
            losses = regression_losses(outputs, y)
            objective = losses[k] + beta * losses[1 - k]  # Eq. 10 (λ l_k has no gradient on w)
            grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params.values(), grads):
                    if g is not None:
                        p -= lr * g
        result = {name: p.detach().clone() for name, p in net.named_parameters()}
        for name in routed:  # Eq. 9: the routes baked in
            v = nu[name][k].abs()
            route = v / (eps + 0.1 * v.sum(-1, keepdim=True)) ** 0.5
            m, n = v.shape
            w = result[name]
            result[name] = (F.normalize(w.reshape(m, n, -1), dim=-1) * route[..., None]).reshape(w.shape)
        results.append(result)
    fused = {}
    own = [{n for n, _ in model.heads[t].named_parameters(prefix=f"heads.{t}")} for t in range(2)]
    for name in results[0]:
        owner = next((t for t in range(2) if name in own[t]), None)
        if owner is not None:
            fused[name] = results[owner][name]
        elif name in nu:
            prime = [nu[name][k].abs() / nu[name][k].abs().sum(-1, keepdim=True) for k in range(2)]  # Eq. 8
            weights = [p.reshape(*p.shape, *([1] * (results[0][name].dim() - 2))) for p in prime]
            fused[name] = sum(w * r[name] for w, r in zip(weights, results)) / sum(weights)
        else:
            fused[name] = (results[0][name] + results[1][name]) / 2
    return fused


def test_one_epoch_is_alg_1_computed_independently():
    data = batches()
    rule = drmgf.DRMGFUpdate(beta=0.3, nu_optimizer=FROZEN, fusion_optimizer=FROZEN, bn_stats="carry")
    run = trainer(rule, lr=0.05)
    start = copy.deepcopy(run.model)
    nu = {name: [v.detach().clone() for v in values] for name, values in rule.nu.items()}
    assert list(nu) == ["trunk.0.weight", "trunk.3.weight"]  # every shared convolution, none else
    expected = independent_epoch(start, nu, data, beta=0.3, lr=0.05, eps=rule.eps)
    run.fit(data)
    for name, param in run.model.named_parameters():
        assert torch.allclose(param, expected[name], atol=1e-6), name


def test_fusion_with_equal_importance_is_the_average_of_the_task_results():
    data = batches()
    equal = drmgf.DRMGFUpdate(init="norm", nu_optimizer=FROZEN, fusion_optimizer=FROZEN)
    average = drmgf.DRMGFUpdate(init="norm", nu_optimizer=FROZEN, fusion="average")
    one, two = trainer(equal), trainer(average)
    one.fit(data), two.fit(data)
    for (name, a), b in zip(one.model.named_parameters(), two.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not average.fusion_variables() and equal.fusion_variables()


def test_metagf_with_equal_frozen_weights_is_the_average_of_plain_task_passes():
    data = batches()
    rule = metagf.MetaGFUpdate(aux=0.2, meta_optimizer=FROZEN, ema=None, bn_stats="carry")
    run = trainer(rule, lr=0.05)
    start = copy.deepcopy(run.model)
    run.fit(data)
    results = []
    for k in range(2):
        net = copy.deepcopy(start)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        for x, y in data:
            opt.zero_grad()
            losses = regression_losses(net(x), y)
            (losses[k] + 0.2 * losses[1 - k]).backward()
            opt.step()
        results.append(dict(net.named_parameters()))
    for name, param in run.model.named_parameters():
        owner = int(name.split(".")[1]) if name.startswith("heads.") else None
        expected = results[owner][name] if owner is not None else (results[0][name] + results[1][name]) / 2
        assert torch.allclose(param, expected, atol=1e-6), name


@pytest.mark.parametrize(
    "rule",
    [
        lambda: drmgf.DRMGFUpdate(nu_optimizer={"name": "adam", "lr": 1e-2}),
        lambda: drmgf.DRMGFUpdate(fusion="average", nu_optimizer={"name": "adam", "lr": 1e-2}),
        lambda: drmgf.DRMGFUpdate(
            init="norm", normalisation="lrn", mixing=10, fusion="scaled", ema=0.9, bn_stats="mixture", route_epochs=3
        ),
        lambda: metagf.MetaGFUpdate(granularity="channel", weighting="exp", temperature=0.1),
        lambda: metagf.MetaGFUpdate(granularity="connection", init=0.0, meta_optimizer={"name": "adam", "lr": 1e-2}),
    ],
    ids=["drmgf", "dravgf", "drmgf-code", "metagf-channel", "metagf-connection"],
)
def test_every_variant_learns(rule):
    data = batches(4, 8)
    run = trainer(rule(), lr=1e-2, epochs=8, optimizer="adam")
    history = run.fit(data).history
    assert sum(history[-1]) < 0.3 * sum(history[0])


def test_the_meta_step_moves_the_importance_variables_towards_lower_summed_loss():
    data = batches()
    rule = drmgf.DRMGFUpdate(nu_optimizer=FROZEN, fusion_optimizer={"name": "sgd", "lr": 0.5})
    run = trainer(rule, lr=0.05)
    before = [v.detach().clone() for v in rule.task_variables()]
    run.fit(data)
    moved = sum(float((v.detach() - b).abs().sum()) for v, b in zip(rule.task_variables(), before))
    assert moved > 0  # the outer optimisation (Eq. 8) changed ν although the task passes could not


class Crash(Exception):
    pass


def crashing(after: int):
    calls = {"n": 0}

    def criterion(outputs, targets):
        calls["n"] += 1
        if calls["n"] == after:
            raise Crash
        return regression_losses(outputs, targets)

    return criterion


@pytest.mark.parametrize("after", [5, 9], ids=["in-a-task-pass", "in-the-fusion-pass"])
def test_a_killed_run_resumes_bit_identically(tmp_path, after):
    data = batches()  # 3 batches: per epoch 2 task passes (calls 1–6) and the fusion pass (7–9)

    def make(run_dir, criterion=regression_losses):
        rule = drmgf.DRMGFUpdate(nu_optimizer={"name": "adam", "lr": 1e-2}, ema=0.5)
        return trainer(rule, run_dir=run_dir, epochs=3, optimizer="adam", criterion=criterion), rule

    straight, straight_rule = make(tmp_path / "straight")
    straight.fit(data)
    killed, _ = make(tmp_path / "killed", crashing(9 + after))  # in the second epoch
    with pytest.raises(Crash):
        killed.fit(data)
    resumed, resumed_rule = make(tmp_path / "killed")
    assert resumed.fit(data).resumed_from_epoch == 1
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight_rule.task_variables(), resumed_rule.task_variables()):
        assert torch.equal(a, b)
    assert straight_rule.records() == resumed_rule.records()


def test_pruning_zeroes_only_the_connections_a_task_owns_and_restores_them():
    rule = drmgf.DRMGFUpdate()
    run = trainer(rule)
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    owners = rule.importance()
    with rule.pruned(run.model, 0) as count:
        params = dict(run.model.named_parameters())
        for name, owner in owners.items():
            filters = params[name].reshape(*owner.shape, -1)
            assert bool((filters[owner == 0] == 0).all())
            assert torch.equal(filters[owner != 0], before[name].reshape(*owner.shape, -1)[owner != 0])
        assert count == sum(int((owner == 0).sum()) for owner in owners.values()) > 0
    for name, param in run.model.named_parameters():
        assert torch.equal(param, before[name])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: drmgf.DRMGFUpdate(fusion="best"), "fusion must be one of"),
        (lambda: drmgf.DRMGFUpdate(beta=2), "aux"),
        (lambda: drmgf.DRMGFUpdate(bn_stats="frozen"), "bn_stats"),
        (lambda: metagf.MetaGFUpdate(granularity="filter"), "granularity"),
        (lambda: drmgf.DRMGFUpdate(nu_optimizer={"name": "lbfgs"}), "name must be one of"),
    ],
)
def test_bad_options_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        trainer(make())


def test_the_procedure_refuses_an_aggregator_and_unshared_routes():
    with pytest.raises(ConfigError, match="method 'equal'"):
        Trainer(Net(), regression_losses, torch.optim.SGD(Net().parameters(), lr=0.1), "pcgrad",
                update=drmgf.DRMGFUpdate())  # fmt: skip
    with pytest.raises(ConfigError, match="shared parameters only"):
        trainer(drmgf.DRMGFUpdate(routed=["heads.0.2.weight"]))


# -- through the experiment core (a run definition's drmgf: / metagf: option) -----------------------
@pytest.fixture(scope="module")
def data_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    NYUv2.write_synthetic(base / "nyuv2", seed=0, train=4, val=2, size=(32, 64))
    return base


def test_a_run_with_drmgf_records_its_passes_and_pruning(data_base):
    spec = RunSpec.from_dict({"dataset": "nyuv2", "model": "split", "drmgf": {}})
    assert spec.name == "nyuv2-split-equal-drmgf"
    settings = TrainingSettings(
        model_options={"width": 1 / 16}, epochs=2, last_k=1, batch_size={"nyuv2": 2}, augment=False, log_every=0
    )
    frame = train_seed(spec, settings, 0, data_base=data_base, work_dir=None, progress=False)
    procedure = frame.attrs["procedure"]
    passes = pd.DataFrame(procedure["passes"])
    assert set(passes["stage"]) == {"segmentation", "depth", "normal"} and set(passes["epoch"]) == {0, 1}
    pruning = pd.DataFrame(procedure["pruning"])
    assert set(pruning["pruned"]) == {"segmentation", "depth", "normal"}
    assert pruning["unpruned"].notna().all() and (pruning["connections_pruned"] > 0).all()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"drmgf": {"fusoin": "meta"}}, "unknown drmgf option"),
        ({"drmgf": {}, "method": "pcgrad"}, "needs method 'equal'"),
        ({"drmgf": {}, "metagf": {}}, "one procedure"),
        ({"metagf": {}, "sparse": {"k": 3}}, "no strength or sparse"),
    ],
)
def test_bad_run_definitions_are_named(row, message):
    with pytest.raises(ConfigError, match=message):
        RunSpec.from_dict({"dataset": "nyuv2", "model": "mtan", **row})
