"""Connection strength-based optimization (*Task priority in multi-task learning: connection strength*,
Sec. 4, Eq. 4–10, Alg. 1).

Every shared convolution gets one batch normalisation per task after it (the only added parameters;
the computation after it runs per task, like Recon's branched layers: :func:`task_specific_bn`). The
strength of output channel p for task i is the energy of the convolution's filter p scaled by task
i's BN (Eq. 4–6), normalised over the channels of the layer (Eq. 7): :func:`priority`. Training mixes
two phases (Alg. 1), chosen by P ~ U(0, 1) against e/E:

* **Phase 1** (P > e/E, learning the priority, Eq. 9): the tasks are updated one after another within a
  step — task i's loss, at the shared parameters task i−1 left, updates the shared parameters and
  task i's own;
* **Phase 2** (otherwise, conserving it, Eq. 10): per shared convolution, each output channel goes to
  the group of its top-priority task; within group i, every other task's gradient that conflicts with
  task i's (negative inner product over the group's parameters) is projected onto the normal plane of
  task i's, and the group's gradients are summed. Shared parameters outside any convolution (none in
  SegNet) get the plain sum.

:class:`ConnectionStrengthUpdate` is the :class:`~deconflict.train.UpdateRule`; ``phases`` picks the
paper's mixing or an ablation of its Table 4 (``phase1``, ``phase2``, ``sequential``: Phase 1 for the
first half of the epochs, then Phase 2), ``draw`` when P is drawn (``epoch``: the paper's Alg. 1;
``iteration``: every step, the official core's variant).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from deconflict.errors import ConfigError, ShapeError
from deconflict.methods.recon import BranchedModel, conflict_layers
from deconflict.models import MultiTaskModel
from deconflict.tasks import TaskLoss
from deconflict.train.callbacks import StepOutput
from deconflict.train.update import UpdateRule

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = [
    "DRAWS",
    "PHASES",
    "ConnectionStrengthUpdate",
    "TaskSpecificBN",
    "conv_bn_pairs",
    "priority",
    "project_groups",
    "task_specific_bn",
]

#: the schedules of the two phases: the paper's mixing and the ablations of its Table 4
PHASES = ("mixed", "phase1", "phase2", "sequential")
#: when the mixing draws P: once per epoch (Alg. 1, Sec. 4.4) or every step (the official core)
DRAWS = ("epoch", "iteration")


def priority(conv_weight: Tensor, bn_weights: Tensor, bn_running_vars: Tensor, eps: float = 1e-5) -> Tensor:
    """The normalised connection strengths Ŝ (tasks × output channels), Eq. 4–7.

    ``conv_weight``: the shared convolution's weight (N_O × N_I × K × K); ``bn_weights`` and
    ``bn_running_vars``: each task's BN scale γ and running variance (tasks × N_O). Eq. 4:
    s_pq = (1/K²) Σ_mn W(p, q, m, n)²; Eq. 6: S_p^i = γ_{i,p}² / (Var_{i,p} + ε) · Σ_q s_pq; Eq. 7:
    Ŝ_p^i = S_p^i / Σ_p S_p^i. (The official code omits Eq. 4's 1/K², which Eq. 7 cancels.)
    """
    if conv_weight.dim() < 2:
        raise ShapeError(f"priority: conv_weight must be N_O × N_I × …, got shape {tuple(conv_weight.shape)}.")
    outputs = conv_weight.shape[0]
    if bn_weights.dim() != 2 or bn_weights.shape != bn_running_vars.shape or bn_weights.shape[1] != outputs:
        raise ShapeError(
            f"priority: bn_weights and bn_running_vars must both be tasks × {outputs} (one row per task's BN), "
            f"got {tuple(bn_weights.shape)} and {tuple(bn_running_vars.shape)}."
        )
    weight = conv_weight.detach().to(torch.float64)
    kernel = weight[0, 0].numel()
    s = weight.pow(2).flatten(2).sum(-1) / kernel  # N_O × N_I, Eq. 4
    strength = bn_weights.detach().to(torch.float64).pow(2) / (bn_running_vars.detach().to(torch.float64) + eps)
    strength = strength * s.sum(1)  # tasks × N_O, Eq. 6
    return strength / strength.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)  # Eq. 7


def project_groups(gradients: Tensor, groups: Tensor) -> Tensor:
    """Phase 2 on one shared convolution: ``gradients`` (tasks × N_O × …, each task's gradient of the
    layer's parameters per output channel), ``groups`` (N_O: each channel's top-priority task, Eq. 10).
    Within the group of task i, a task j ≠ i whose gradient G_ij has a negative inner product with G_ii
    is projected onto the normal plane of G_ii; the result is Σ_j G_ij per group (N_O × …)."""
    tasks = gradients.shape[0]
    out = gradients.sum(0)
    for i in range(tasks):
        members = groups == i
        if not members.any():
            continue
        block = gradients[:, members].reshape(tasks, -1)
        reference = block[i]
        norm = reference.dot(reference)
        adjusted = block.clone()
        if norm > 0:
            for j in range(tasks):
                inner = block[j].dot(reference)
                if j != i and inner < 0:
                    adjusted[j] = block[j] - inner / norm * reference
        out[members] = adjusted.sum(0).reshape(out[members].shape)
    return out


def conv_bn_pairs(model: MultiTaskModel) -> list[tuple[str, str]]:
    """(shared convolution, the BatchNorm right after it) in forward order: the layers whose strengths
    the method measures. The BN is the next shared layer in forward order with one feature per output
    channel of the convolution."""
    order = conflict_layers(model)
    pairs = []
    for name, following in itertools.pairwise(order):
        conv, bn = model.get_submodule(name), model.get_submodule(following)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            pairs.append((name, following))
    return pairs


class TaskSpecificBN(BranchedModel):
    """A model whose shared BatchNorms after shared convolutions are one BN per task (the method's
    "task-specific connections"): a :class:`~deconflict.methods.recon.BranchedModel` of those BN layers,
    which knows its (convolution, BN) pairs and runs one task's stream alone (Phase 1)."""

    def __init__(self, model: MultiTaskModel, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__(model, [bn for _, bn in pairs], copies="identical")
        self.pairs = tuple(pairs)

    def forward_task(self, inputs: Any, task: int) -> Tensor:
        """Task ``task``'s output alone: its stream through its own BNs and its decoder."""
        self._activate(task)
        try:
            return self.inner.decode_task(self.inner.encode(inputs), self.task_names[task])
        finally:
            self._activate(0)

    def strengths(self) -> list[tuple[str, Tensor]]:
        """(convolution name, Ŝ: tasks × output channels) for every pair, from the current parameters."""
        out = []
        for conv_name, bn_name in self.pairs:
            conv = self.inner.get_submodule(conv_name)
            copies = self.inner.get_submodule(bn_name).copies
            gamma = torch.stack([bn.weight for bn in copies])
            variance = torch.stack([bn.running_var for bn in copies])
            out.append((conv_name, priority(conv.weight, gamma, variance, eps=copies[0].eps)))
        return out


def task_specific_bn(model: MultiTaskModel) -> TaskSpecificBN:
    """``model`` with one BatchNorm per task after every shared convolution (:func:`conv_bn_pairs`); the
    copies start identical, so the new model computes ``model``'s outputs. ``model`` is not changed."""
    if model.num_tasks < 2:
        raise ConfigError("connection strength: the model has one task; task priority needs two or more.")
    pairs = conv_bn_pairs(model)
    if not pairs:
        raise ConfigError(
            f"connection strength: {type(model).__name__} has no shared convolution followed by a BatchNorm2d "
            "(the method measures task priority at the task-specific BN after each shared convolution)."
        )
    return TaskSpecificBN(model, pairs)


class ConnectionStrengthUpdate(UpdateRule):
    """Alg. 1: each step is Phase 1 (sequential per-task updates, Eq. 9) or Phase 2 (per channel group,
    the conflicting gradients projected onto the normal plane of the top-priority task's, Eq. 10).

    Args:
        phases: ``mixed`` (Alg. 1: Phase 1 when P ~ U(0, 1) > e/E), ``phase1`` or ``phase2`` only, or
            ``sequential`` (Phase 1 for the first half of the epochs, then Phase 2): Table 4's ablation.
        draw: when ``mixed`` draws P: ``epoch`` (the paper) or ``iteration`` (the official core).
        seed: of P's draws (kept in checkpoints: a resumed run draws the same phases).
        group_bias: Phase 2 groups a channel's bias with its filter (the paper: a channel's parameters);
            False sums the biases' task gradients unprojected (the official core).

    The model must be a :class:`TaskSpecificBN` (:func:`task_specific_bn`), the criterion a
    :class:`~deconflict.tasks.TaskLoss`. Every step records its phase; every epoch end records, per
    task, the share of the shared convolutions' output channels it has top priority over (Fig. 4):
    :meth:`records`.
    """

    def __init__(self, phases: str = "mixed", draw: str = "epoch", seed: int = 0, group_bias: bool = True) -> None:
        if phases not in PHASES:
            raise ConfigError(f"connection strength phases must be one of {', '.join(PHASES)}, got {phases!r}.")
        if draw not in DRAWS:
            raise ConfigError(f"connection strength draw must be one of {', '.join(DRAWS)}, got {draw!r}.")
        self.phases, self.draw, self.seed, self.group_bias = phases, draw, int(seed), bool(group_bias)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.phase = 1
        self._phases: list[dict[str, Any]] = []
        self._priorities: list[dict[str, Any]] = []

    def describe(self) -> str:
        return (
            f"ConnectionStrengthUpdate(phases={self.phases}, draw={self.draw}, seed={self.seed}, "
            f"group_bias={self.group_bias})"
        )

    def setup(self, trainer: Trainer) -> None:
        if not isinstance(trainer.model, TaskSpecificBN):
            raise ConfigError(
                "connection strength trains a model with task-specific BatchNorms: pass "
                "deconflict.methods.connection_strength.task_specific_bn(model) to the Trainer."
            )
        if not isinstance(trainer.criterion, TaskLoss):
            raise ConfigError("connection strength needs a deconflict.tasks.TaskLoss criterion (one loss per task).")
        if trainer.config.level != "parameter" or trainer.methods.aggregator or trainer.methods.regularizer:
            raise ConfigError(
                "connection strength is its own update rule at parameter level: train it with the equal "
                "weighting (method 'equal') and no aggregator or regularizer."
            )
        shared = {id(p) for p in trainer.parameter_split()[0]}
        for conv_name, _ in trainer.model.pairs:
            conv = trainer.model.inner.get_submodule(conv_name)
            if id(conv.weight) not in shared:
                raise ConfigError(
                    f"connection strength: the convolution {conv_name!r} is not among the shared parameters."
                )

    # -- phases --------------------------------------------------------------------------------
    def _draw(self, trainer: Trainer) -> int:
        epochs, epoch = max(1, trainer.config.epochs), trainer.epoch
        if self.phases == "phase1":
            return 1
        if self.phases == "phase2":
            return 2
        if self.phases == "sequential":
            return 1 if epoch < epochs / 2 else 2
        p = float(torch.rand((), generator=self.generator))
        return 1 if p > epoch / epochs else 2

    def start_epoch(self, trainer: Trainer) -> None:
        if self.draw == "epoch" or self.phases != "mixed":
            self.phase = self._draw(trainer)

    def step(self, trainer: Trainer, inputs: Any, targets: Any) -> StepOutput:
        if self.draw == "iteration" and self.phases == "mixed":
            self.phase = self._draw(trainer)
        run_phase = self._phase1 if self.phase == 1 else self._phase2
        losses, outputs = run_phase(trainer, inputs, targets)
        record = {"epoch": trainer.epoch, "step": trainer.step + 1, "phase": self.phase}
        self._phases.append({**record, **dict(zip(trainer.model.task_names, losses.tolist()))})
        return StepOutput(
            epoch=trainer.epoch,
            step=trainer.step + 1,
            losses=losses,
            weights=torch.ones_like(losses),
            backward=None,
            outputs=outputs,
            targets=targets,
        )

    def _phase1(self, trainer: Trainer, inputs: Any, targets: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 9: task by task, a forward pass of the task's stream and an optimizer step on its loss."""
        model, losses, outputs = trainer.model, [], {}
        tasks = {task.name: task for task in trainer.criterion.tasks}
        for index, name in enumerate(model.task_names):
            trainer.optimizer.zero_grad(set_to_none=True)
            output = model.forward_task(inputs, index)
            loss = tasks[name].loss(output, targets[name])
            trainer.check_finite(loss.detach().reshape(1), [name])
            loss.backward()
            trainer.optimizer_step()
            losses.append(loss.detach())
            outputs[name] = output.detach()
        return torch.stack(losses), outputs

    def _phase2(self, trainer: Trainer, inputs: Any, targets: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 10 and the projection within each channel group; the sum of the results is the update."""
        strengths = trainer.model.strengths()  # the priority of the parameters this step starts from
        trainer.optimizer.zero_grad(set_to_none=True)
        representation, outputs = trainer.forward(inputs)
        rows, losses = trainer.task_losses(outputs, targets)
        trainer.watch_before_backward(rows, representation)
        shared, own = trainer.parameter_split()
        per_task: list[list[Tensor]] = []
        for t, row in enumerate(rows):
            wanted = [*shared, *own[t]]
            grads = torch.autograd.grad(row, wanted, retain_graph=t < len(rows) - 1, allow_unused=True)
            per_task.append([torch.zeros_like(p) if g is None else g for p, g in zip(shared, grads[: len(shared)])])
            for param, grad in zip(own[t], grads[len(shared) :]):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad + grad
        combined = [torch.stack(column).sum(0) for column in zip(*per_task)]
        index = {id(p): i for i, p in enumerate(shared)}
        for conv_name, strength in strengths:
            conv = trainer.model.inner.get_submodule(conv_name)
            groups = strength.argmax(0)  # Eq. 10: each output channel's top-priority task
            w = index[id(conv.weight)]
            blocks = [torch.stack([g[w] for g in per_task]).flatten(2)]  # tasks × N_O × (N_I·K·K)
            b = index.get(id(conv.bias)) if conv.bias is not None else None
            if b is not None and self.group_bias:
                blocks.append(torch.stack([g[b] for g in per_task]).unsqueeze(-1))
            projected = project_groups(torch.cat(blocks, -1), groups)
            combined[w] = projected[:, : blocks[0].shape[-1]].reshape(conv.weight.shape)
            if b is not None and self.group_bias:
                combined[b] = projected[:, -1]
        for param, grad in zip(shared, combined):
            param.grad = grad
        trainer.optimizer_step()
        return losses, {name: out.detach() for name, out in outputs.items()}

    def end_epoch(self, trainer: Trainer) -> None:
        """Fig. 4: per task, the share (%) of the shared convolutions' output channels it has top priority over."""
        counts = torch.zeros(trainer.model.num_tasks, dtype=torch.long)
        for _, strength in trainer.model.strengths():
            counts += torch.bincount(strength.argmax(0), minlength=trainer.model.num_tasks)
        total = int(counts.sum())
        for name, count in zip(trainer.model.task_names, counts.tolist()):
            share = 100.0 * count / total
            self._priorities.append({"epoch": trainer.epoch, "task": name, "top_priority_percent": share})

    def records(self) -> dict[str, list[dict[str, Any]]]:
        """What the rule recorded: ``phases`` (per step: its phase and each task's loss, Fig. 3) and
        ``priorities`` (per epoch and task: the share of channels it has top priority over, Fig. 4)."""
        return {"phases": list(self._phases), "priorities": list(self._priorities)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "phase": self.phase,
            "phases": list(self._phases),
            "priorities": list(self._priorities),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.phase = int(state["phase"])
        self._phases = list(state["phases"])
        self._priorities = list(state["priorities"])
