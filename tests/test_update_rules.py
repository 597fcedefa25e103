"""The training loop takes the papers' kinds of procedure without a new branch: sequential per-task steps
within a batch, per-task inner updates fused by learned weights, a fixed mask on the update, model
surgery before training — each resumable to the numbers of an uninterrupted run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deconflict.train import (
    AggregatedUpdate,
    Callback,
    StepOutput,
    TrainConfig,
    Trainer,
    UpdateHook,
    UpdateRule,
    WeightedLossUpdate,
    seed_everything,
)
from tests.architectures import MLPMultiTask, regression_losses


def batches(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(5, 3, generator=generator)
    out = []
    for _ in range(n):
        inputs = torch.randn(16, 5, generator=generator)
        out.append((inputs, torch.tanh(inputs @ mixing)))
    return out


class SequentialTaskSteps(UpdateRule):
    """Connection strength's Phase 1 kind: each task, one after another, takes its own optimizer step."""

    def step(self, trainer, inputs, targets):
        losses = []
        for task in range(trainer.model.num_tasks):
            trainer.optimizer.zero_grad(set_to_none=True)
            _, outputs = trainer.forward(inputs)
            rows, stacked = trainer.task_losses(outputs, targets)
            rows[task].backward()
            trainer.optimizer_step()
            losses.append(stacked[task])
        return StepOutput(
            epoch=trainer.epoch, step=trainer.step + 1, losses=torch.stack(losses), weights=None, backward=None
        )


class FusedTaskUpdates(UpdateRule):
    """Meta-GF's kind: per-task updates from the same start, fused by weights the rule learns (its state)."""

    def __init__(self, lr: float = 0.05) -> None:
        self.lr = lr
        self.logits: torch.Tensor | None = None

    def setup(self, trainer):
        self.logits = torch.zeros(trainer.model.num_tasks)

    def step(self, trainer, inputs, targets):
        params = list(trainer.model.parameters())
        start = [p.detach().clone() for p in params]
        deltas = []
        for task in range(trainer.model.num_tasks):
            _, outputs = trainer.forward(inputs)
            rows, stacked = trainer.task_losses(outputs, targets)
            grads = torch.autograd.grad(rows[task], params, allow_unused=True)
            deltas.append([torch.zeros_like(p) if g is None else -self.lr * g for p, g in zip(params, grads)])
        weights = torch.softmax(self.logits, 0)
        with torch.no_grad():
            for index, param in enumerate(params):
                param.copy_(start[index] + sum(w * d[index] for w, d in zip(weights, deltas)))
            _, outputs = trainer.forward(inputs)
            _, after = trainer.task_losses(outputs, targets)
        self.logits = self.logits + 0.1 * (after - after.mean())  # lean towards the tasks that lag
        return StepOutput(
            epoch=trainer.epoch, step=trainer.step + 1, losses=stacked.detach(), weights=weights, backward=None
        )

    def state_dict(self):
        return {"logits": self.logits.clone()}

    def load_state_dict(self, state):
        self.logits = state["logits"].clone()


class FixedMask(UpdateHook):
    """Sparse training's kind: only the masked-in entries of the shared parameters ever move."""

    def __init__(self, fraction: float = 0.5, seed: int = 0) -> None:
        self.fraction, self.seed = fraction, seed

    def setup(self, trainer):
        generator = torch.Generator().manual_seed(self.seed)
        self.params = trainer.model.shared_parameters()
        self.masks = [torch.rand(p.shape, generator=generator) < self.fraction for p in self.params]

    def before_step(self, trainer):
        self.before = [p.detach().clone() for p in self.params]
        for param, mask in zip(self.params, self.masks):
            if param.grad is not None:
                param.grad.mul_(mask)

    def after_step(self, trainer):  # optimizer state (momentum, Adam moments) must not move a frozen entry
        with torch.no_grad():
            for param, mask, before in zip(self.params, self.masks, self.before):
                param.copy_(torch.where(mask, param, before))


def branch_last_trunk_layer(model: MLPMultiTask) -> nn.Module:
    """Recon's kind of surgery: the last shared layer becomes one copy per task."""

    class Branched(MLPMultiTask):
        def __init__(self, source: MLPMultiTask) -> None:
            super().__init__(source.num_tasks)
            self.load_state_dict(source.state_dict())
            self.copies = nn.ModuleList(copy.deepcopy(self.trunk[2]) for _ in range(self.num_tasks))

        def encode(self, inputs):
            return self.trunk[1](self.trunk[0](inputs))

        def decode(self, representation):
            return {
                name: head(torch.tanh(layer(representation))).squeeze(-1)
                for name, head, layer in zip(self.task_names, self.heads, self.copies)
            }

        def shared_parameters(self):
            return list(self.trunk[0].parameters())

        def task_parameters(self):
            return [[*layer.parameters(), *head.parameters()] for layer, head in zip(self.copies, self.heads)]

    return Branched(model)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, output):
        if output.step == self.at:
            raise KeyboardInterrupt


def make(rule_factory, run_dir=None, callbacks=(), hooks=(), method=None, surgery=None):
    seed_everything(0)
    model = MLPMultiTask(3)
    if surgery is not None:
        model = surgery(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    return Trainer(
        model,
        regression_losses,
        optimizer,
        method,
        update=rule_factory() if rule_factory else None,
        hooks=[factory() for factory in hooks],
        run_dir=run_dir,
        callbacks=list(callbacks),
        config=TrainConfig(epochs=3, progress=False),
    )


PROCEDURES = {
    "sequential": {"rule_factory": SequentialTaskSteps},
    "fused": {"rule_factory": FusedTaskUpdates},
    "masked": {"rule_factory": None, "hooks": [FixedMask], "method": "pcgrad"},
    "surgery": {"rule_factory": None, "surgery": branch_last_trunk_layer},
}


@pytest.mark.parametrize("kind", PROCEDURES)
def test_each_kind_of_procedure_learns_and_resumes_bit_identically(kind, tmp_path):
    options = PROCEDURES[kind]
    data = batches()
    straight = make(**options)
    result = straight.fit(data)
    assert sum(result.history[-1]) < sum(result.history[0]), result.history
    killed = make(**options, run_dir=tmp_path, callbacks=[StopAt(10)])  # in the second epoch
    with pytest.raises(KeyboardInterrupt):
        killed.fit(data)
    resumed = make(**options, run_dir=tmp_path)
    resumed.fit(data)
    assert resumed.resumed_from_epoch == 1
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    if kind == "fused":
        assert torch.equal(straight.rule.logits, resumed.rule.logits)


def test_sequential_steps_take_one_optimizer_step_per_task():
    trainer = make(SequentialTaskSteps)
    counted = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (counted.append(1), original(*a, **k))[1]
    trainer.train_step(batches(1)[0])
    assert len(counted) == 3 and trainer.step == 1


def test_a_masked_entry_never_moves_under_adam_and_any_method():
    for method in ("equal", "pcgrad", "nash_mtl", "uw"):
        trainer = make(None, hooks=[FixedMask], method=method)
        start = [p.detach().clone() for p in trainer.model.shared_parameters()]
        trainer.fit(batches())
        hook = trainer.hooks[0]
        for param, mask, before in zip(trainer.model.shared_parameters(), hook.masks, start):
            assert torch.equal(param[~mask], before[~mask]), method
            assert not torch.equal(param[mask], before[mask]), method


def test_surgery_keeps_the_outputs_and_the_default_rules_are_the_methods():
    seed_everything(0)
    model = MLPMultiTask(3)
    branched = branch_last_trunk_layer(model)
    inputs = torch.randn(4, 5)
    for name in model.task_names:
        torch.testing.assert_close(branched(inputs)[name], model(inputs)[name])
    assert isinstance(make(None).rule, WeightedLossUpdate)
    assert isinstance(make(None, method="cagrad").rule, AggregatedUpdate)
