"""The training engine: determinism, resume, atomic checkpoints, logging, clear failures."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import CheckpointError, ConfigError, NonFiniteError
from deconflict.train import Callback, TrainConfig, Trainer, load_checkpoint, seed_everything
from tests.architectures import MLPMultiTask, regression_losses


def synthetic_batches(n_batches: int = 6, batch: int = 16, n_tasks: int = 3, seed: int = 0):
    """Regression tasks with learnable structure: each target is a fixed function of the input."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(5, n_tasks, generator=generator)
    batches = []
    for _ in range(n_batches):
        inputs = torch.randn(batch, 5, generator=generator)
        batches.append((inputs, torch.tanh(inputs @ mixing)))
    return batches


def make_trainer(
    run_dir=None, aggregator=None, weighting=None, epochs=4, callbacks=(), level="parameter", lr=0.05, seed=0, **config
):
    seed_everything(seed)
    model = MLPMultiTask(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return Trainer(
        model,
        regression_losses,
        optimizer,
        aggregator=aggregator,
        weighting=weighting,
        scheduler=scheduler,
        run_dir=run_dir,
        callbacks=list(callbacks),
        config=TrainConfig(epochs=epochs, progress=False, level=level, **config),
    )


def parameters(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


class StopAfter(Callback):
    """Simulates a kill in the middle of an epoch."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, output):
        if output.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("aggregator", [None, "pcgrad", "mgda", "cagrad", "nash_mtl"])
def test_training_learns_and_is_deterministic(aggregator):
    data = synthetic_batches()
    first = make_trainer(aggregator=aggregator).fit(data)
    second_trainer = make_trainer(aggregator=aggregator)
    second = second_trainer.fit(data)
    assert first.history == second.history
    assert sum(first.history[-1]) < 0.6 * sum(first.history[0])  # every method really learns


def test_feature_level_training_learns():
    result = make_trainer(aggregator="mgda", level="feature").fit(synthetic_batches())
    assert sum(result.history[-1]) < 0.6 * sum(result.history[0])


@pytest.mark.parametrize("aggregator", [None, "pcgrad", "nash_mtl"])
def test_resume_after_a_kill_gives_the_same_result(tmp_path, aggregator):
    data = synthetic_batches()
    uninterrupted = make_trainer(aggregator=aggregator)
    uninterrupted.fit(data)

    run_dir = tmp_path / "run"
    killed = make_trainer(run_dir, aggregator=aggregator, callbacks=[StopAfter(15)])  # mid epoch 3
    with pytest.raises(KeyboardInterrupt):
        killed.fit(data)
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2
    resumed = make_trainer(run_dir, aggregator=aggregator, seed=999)  # fresh process, other seed
    result = resumed.fit(data)
    assert result.resumed_from_epoch == 2 and result.steps == 24
    for name, value in parameters(uninterrupted).items():
        assert torch.equal(value, parameters(resumed)[name]), name
    # the dvclive log has each step once, without the rows logged after the checkpoint twice
    rows = (run_dir / "dvclive" / "plots" / "metrics" / "train" / "loss" / "total.tsv").read_text().splitlines()
    column = rows[0].split("\t").index("step")
    steps = [int(row.split("\t")[column]) for row in rows[1:]]
    assert steps == list(range(1, 25))


def test_a_finished_run_is_not_trained_again(tmp_path):
    data = synthetic_batches()
    make_trainer(tmp_path).fit(data)
    again = make_trainer(tmp_path)
    result = again.fit(data)
    assert result.resumed_from_epoch == 4 and result.history == []


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    make_trainer(tmp_path, epochs=1).fit(synthetic_batches())
    with pytest.raises(CheckpointError, match="different settings"):
        make_trainer(tmp_path, epochs=1, aggregator="pcgrad").fit(synthetic_batches())


def test_corrupt_checkpoint_is_named(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read.*delete it"):
        make_trainer(tmp_path).fit(synthetic_batches())


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    make_trainer(tmp_path, epochs=1).fit(synthetic_batches())
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    trainer = make_trainer(tmp_path, epochs=2)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit(synthetic_batches())
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    data = synthetic_batches()
    data[3] = (data[3][0], data[3][1].clone().fill_(float("nan")))
    with pytest.raises(
        NonFiniteError, match=r"loss of task\(s\) t0, t1, t2 is NaN/Inf at epoch 1, step 4.*Lower the learning rate"
    ):
        make_trainer(tmp_path).fit(data)
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing half-written that looks like a result


def test_dvclive_logs_metrics(tmp_path):
    make_trainer(tmp_path, epochs=1, log_every=2).fit(synthetic_batches())
    metrics = tmp_path / "dvclive" / "plots" / "metrics" / "train" / "loss"
    assert sorted(p.name for p in metrics.iterdir()) == ["t0.tsv", "t1.tsv", "t2.tsv", "total.tsv"]
    assert len((metrics / "t0.tsv").read_text().splitlines()) == 1 + 3  # header + steps 2, 4, 6


def test_bad_configuration_is_rejected():
    with pytest.raises(ConfigError, match="epochs must be"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="level must be"):
        TrainConfig(level="layer")
    with pytest.raises(ConfigError, match="pcgrad is an aggregator, not a weighting"):
        make_trainer(weighting="pcgrad")
    with pytest.raises(ConfigError, match="empty"):
        make_trainer().fit([])


def test_weighting_and_aggregator_compose():
    result = make_trainer(weighting=optim.get("equal", reduction="mean"), aggregator="pcgrad").fit(synthetic_batches())
    assert sum(result.history[-1]) < sum(result.history[0])


def test_logged_gradnorm_weights_are_the_ones_used(tmp_path):
    """GradNorm's weights change in place at optimizer.step(): the log must show the step's own weights."""
    trainer = make_trainer(tmp_path, weighting="gradnorm", epochs=1)
    used = []
    trainer.callbacks.append(
        type("Record", (Callback,), {"on_step_end": lambda self, t, out: used.append(out.weights)})()
    )
    trainer.fit(synthetic_batches())
    assert used[0].tolist() == [1.0, 1.0, 1.0]  # the first step trains with the initial weights
    assert not torch.equal(used[0], used[1])
    logged = tmp_path / "dvclive" / "plots" / "metrics" / "train" / "weight"
    for task in range(3):
        rows = (logged / f"t{task}.tsv").read_text().splitlines()
        header = rows[0].split("\t")
        values = [float(row.split("\t")[header.index(f"t{task}")]) for row in rows[1:]]
        assert values == pytest.approx([float(w[task]) for w in used], rel=0, abs=1e-7)


class GatedHeads(MLPMultiTask):
    """MLP with a task-specific gate before each head: task parameters = gate + head, heads = head only."""

    def __init__(self, n_tasks: int = 3) -> None:
        super().__init__(n_tasks)
        self.gates = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(n_tasks))

    def decode(self, representation):
        return {
            name: head(torch.sigmoid(gate(representation)) * representation).squeeze(-1)
            for name, gate, head in zip(self.task_names, self.gates, self.heads)
        }

    def task_parameters(self):
        return [[*gate.parameters(), *head.parameters()] for gate, head in zip(self.gates, self.heads)]

    def head_parameters(self):
        return [list(head.parameters()) for head in self.heads]


def lineage_step(shared="model", head_gradients="own", method="nash_mtl"):
    seed_everything(0)
    model = GatedHeads()
    trainer = Trainer(
        model,
        regression_losses,
        torch.optim.SGD(model.parameters(), lr=0.0),
        method,
        config=TrainConfig(epochs=1, progress=False, shared=shared, head_gradients=head_gradients),
    )
    output = trainer.train_step(synthetic_batches(1)[0])
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return trainer, output, grads


def test_all_but_heads_puts_every_tasks_gates_into_the_jacobian():
    trainer, output, grads = lineage_step(shared="all_but_heads")
    model = trainer.model
    shared, own = trainer.parameter_split()
    assert len(shared) == len(list(model.parameters())) - 6 and own == model.head_parameters()
    jac = output.backward.jacobian
    assert jac.shape[1] == sum(p.numel() for p in shared)
    # task 0's row is zero on the other tasks' gates, and the Gramian's diagonal grows by its own gate's part
    names = [n for n, p in model.named_parameters() if any(p is q for q in shared)]
    start = 0
    for name, param in zip(names, shared):
        block = jac[:, start : start + param.numel()]
        if name.startswith("gates.1") or name.startswith("gates.2"):
            assert torch.equal(block[0], torch.zeros_like(block[0]))
        start += param.numel()
    _, model_output, _ = lineage_step(shared="model")
    assert torch.all(
        torch.diagonal(jac @ jac.T) > torch.diagonal(model_output.backward.jacobian @ model_output.backward.jacobian.T)
    )
    # the gates now get the aggregate (Σ α_t g_t restricted to them), not their task's own gradient
    alpha = trainer.aggregator.last_weights
    torch.testing.assert_close(
        grads["gates.1.weight"].flatten(),
        alpha[1] * jac[1, sum(p.numel() for p in shared[: names.index("gates.1.weight")]) :][:36],
    )


def test_weighted_head_gradients_are_alpha_times_own():
    trainer, output, weighted = lineage_step(shared="all_but_heads", head_gradients="weighted")
    _, _, own = lineage_step(shared="all_but_heads", head_gradients="own")
    alpha = trainer.aggregator.loss_weights
    for task in range(3):
        for suffix in ("weight", "bias"):
            torch.testing.assert_close(weighted[f"heads.{task}.{suffix}"], alpha[task] * own[f"heads.{task}.{suffix}"])
    assert not torch.allclose(alpha, torch.ones(3))


def test_lineage_options_are_validated():
    with pytest.raises(ConfigError, match="shared must be one of model, all_but_heads"):
        TrainConfig(shared="everything")
    with pytest.raises(ConfigError, match="needs level='parameter'"):
        TrainConfig(shared="all_but_heads", level="feature")
    with pytest.raises(ConfigError, match="needs an aggregator that weights the task gradients.*got graddrop"):
        lineage_step(head_gradients="weighted", method="graddrop")
    with pytest.raises(ConfigError, match="got no aggregator"):
        lineage_step(head_gradients="weighted", method="equal")
