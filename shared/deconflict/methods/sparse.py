"""Sparse training with PSN (*Proactive Gradient Conflict Mitigation in Multi-Task Learning: A Sparse
Training Perspective*, Sec. 3.4, Eq. 8–9, Fig. 5(c), Tab. 4–5).

Before training, a binary mask is chosen once on the shared parameters; during training only the
selected entries move (Eq. 8–9: θ_{t+1} = θ_t − η (M ⊙ g), M fixed), whatever the multi-task method
made of the gradients; decoders and heads train fully.

* :func:`select` — the mask. ``rule="psn"`` (the paper's): for each neuron (output row of a
  conv or linear weight: ``[out, in·kh·kw]``) keep the K incoming connections of largest |w|. The
  paper gives K as an absolute count per neuron ("K = 300 results in 30.97 % in SAM"); rows shorter
  than K keep all. ``fraction=`` sets K per row as a share of its length instead. The ablations at
  the same count (Fig. 5(c), Tab. 5): ``"random"`` (entries drawn uniformly over all masked
  weights), ``"global"`` (largest |w| over all masked weights) and ``"reverse"`` (the K smallest
  per neuron).
* :class:`MaskedUpdate` — an :class:`~deconflict.train.UpdateHook`: zeroes the unselected entries'
  gradients before every optimizer step and puts their values back after it, so a masked entry never
  moves under any method and any optimizer (Adam moments stay zero there; weight decay cannot move
  it either).

What is masked: the weights (tensors of 2 or more dimensions) of the model's shared parameters —
the "connections". Biases and normalisation parameters (1-D) train fully, as in the first author's
sibling code (``GPS/utils/pruning.py``: ``bias`` trainable); the paper does not say.
:func:`trainable_fraction` gives the "% trainable parameters" of Tab. 4 for a mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from deconflict.errors import ConfigError
from deconflict.models import MultiTaskModel
from deconflict.train.update import UpdateHook

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = [
    "RULES",
    "MaskedUpdate",
    "check_options",
    "masked_parameters",
    "per_neuron_counts",
    "select",
    "trainable_fraction",
]

RULES = ("psn", "random", "global", "reverse")


def masked_parameters(model: MultiTaskModel) -> dict[str, nn.Parameter]:
    """The parameters sparse training masks: the shared weights of 2 or more dimensions, by name."""
    shared = {id(p) for p in model.shared_parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in shared and p.dim() >= 2}


def per_neuron_counts(row_length: int, fraction: float | None, k: int | None) -> int:
    """How many connections of a neuron with ``row_length`` inputs are kept."""
    if k is not None:
        return min(k, row_length)
    return min(row_length, max(1, round(fraction * row_length)))


def check_options(fraction: float | None, k: int | None, rule: str) -> None:
    if rule not in RULES:
        raise ConfigError(f"unknown sparse-training rule {rule!r}; the rules are {', '.join(RULES)}.")
    if (fraction is None) == (k is None):
        raise ConfigError("sparse training: give either fraction= (share of each neuron's inputs) or k= (a count).")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1
    ):
        raise ConfigError(f"sparse training: fraction must be a number in (0, 1], got {fraction!r}.")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"sparse training: K must be a positive integer (connections per neuron), got {k!r}.")


def _per_row(weight: Tensor, count: int, largest: bool) -> Tensor:
    rows = weight.detach().reshape(weight.shape[0], -1).abs()
    index = torch.topk(rows, count, dim=1, largest=largest, sorted=False).indices
    mask = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, index, True)
    return mask.reshape(weight.shape)


def select(
    model: MultiTaskModel,
    fraction: float | None = None,
    rule: str = "psn",
    *,
    k: int | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """A boolean mask per masked shared parameter (:func:`masked_parameters`; True = trained).

    ``rule="psn"`` keeps, for every neuron, its ``k`` (or ``fraction`` of its) incoming connections
    of largest magnitude (Sec. 3.4); ``"reverse"`` the smallest; ``"global"`` and ``"random"`` keep the
    same total number of entries, chosen by magnitude over all masked weights or uniformly at random
    (``seed``). Ties in magnitude are broken by ``torch.topk``.
    """
    check_options(fraction, k, rule)
    params = masked_parameters(model)
    if not params:
        raise ConfigError(f"{type(model).__name__} has no shared weight to mask (shared parameters of 2+ dimensions).")
    counts = {name: per_neuron_counts(math.prod(p.shape[1:]), fraction, k) for name, p in params.items()}
    if rule in ("psn", "reverse"):
        return {name: _per_row(p, counts[name], largest=rule == "psn") for name, p in params.items()}
    total = sum(counts[name] * p.shape[0] for name, p in params.items())
    if rule == "global":
        scores = torch.cat([p.detach().abs().flatten() for p in params.values()])
    else:
        scores = torch.rand(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(seed))
    flat = torch.zeros_like(scores, dtype=torch.bool)
    flat[torch.topk(scores, total, sorted=False).indices] = True
    masks, start = {}, 0
    for name, p in params.items():
        masks[name] = flat[start : start + p.numel()].reshape(p.shape)
        start += p.numel()
    return masks


def trainable_fraction(model: nn.Module, masks: Mapping[str, Tensor]) -> float:
    """Tab. 4's "% trainable parameters": 100 × (parameters that can move) / (all parameters)."""
    params = dict(model.named_parameters())
    frozen = sum(int((~mask).sum()) for name, mask in masks.items() if name in params)
    total = sum(p.numel() for p in params.values())
    return 100.0 * (total - frozen) / total


class MaskedUpdate(UpdateHook):
    """A fixed mask on the update of the shared parameters (Eq. 8–9), for any update rule.

    Before each optimizer step the unselected entries' gradients are set to 0; after it their
    values are put back, so they never move, whatever the optimizer (moments, weight decay).
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        if not masks:
            raise ConfigError("MaskedUpdate needs at least one mask (deconflict.methods.sparse.select).")
        self.masks = {name: mask.to(torch.bool) for name, mask in masks.items()}
        self._params: dict[str, nn.Parameter] = {}
        self._frozen: dict[str, Tensor] = {}

    def setup(self, trainer: Trainer) -> None:
        params = dict(trainer.model.named_parameters())
        missing = [name for name in self.masks if name not in params]
        if missing:
            raise ConfigError(f"the masks name parameters the model does not have: {missing[:5]}.")
        for name, mask in self.masks.items():
            if mask.shape != params[name].shape:
                raise ConfigError(
                    f"mask {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(params[name].shape)}."
                )
            self.masks[name] = mask.to(params[name].device)
        self._params = {name: params[name] for name in self.masks}
        self._frozen = {name: p.detach()[~self.masks[name]].clone() for name, p in self._params.items()}

    def before_step(self, trainer: Trainer) -> None:
        for name, p in self._params.items():
            if p.grad is not None:
                p.grad.masked_fill_(~self.masks[name], 0.0)

    def after_step(self, trainer: Trainer) -> None:
        with torch.no_grad():
            for name, p in self._params.items():
                p[~self.masks[name]] = self._frozen[name]

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("masks", {})
        if set(saved) != set(self.masks) or any(
            not torch.equal(saved[name], mask.cpu()) for name, mask in self.masks.items()
        ):
            raise ConfigError(
                "the checkpoint was trained with another sparse-training mask than this run selects; "
                "remove the run's work folder to start it afresh."
            )
