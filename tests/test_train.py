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


def make_trainer(run_dir=None, aggregator=None, weighting=None, epochs=4, callbacks=(), level="parameter",
                 lr=0.05, seed=0, **config):
    seed_everything(seed)
    model = MLPMultiTask(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return Trainer(model, regression_losses, optimizer, aggregator=aggregator, weighting=weighting,
                   scheduler=scheduler, run_dir=run_dir, callbacks=list(callbacks),
                   config=TrainConfig(epochs=epochs, progress=False, level=level, **config))


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
    with pytest.raises(NonFiniteError, match=r"loss of task\(s\) t0, t1, t2 is NaN/Inf at epoch 1, step 4.*Lower the learning rate"):
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
