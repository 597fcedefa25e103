"""Sparse training with PSN (Sec. 3.4, Eq. 8–9): the selection rules and the masked update.

What the paper claims: PSN keeps, for every neuron, the K incoming connections of largest magnitude;
the ablations keep the same number; during training only the selected entries of the shared encoder
move, whatever the multi-task method and the optimizer.
"""

from __future__ import annotations

import math

import pytest
import torch

from deconflict import models
from deconflict.data import DATASETS
from deconflict.errors import ConfigError
from deconflict.methods import sparse
from deconflict.train import TrainConfig, Trainer
from tests.architectures import ConvBNMultiTask, MLPMultiTask, regression_losses


def rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_psn_keeps_exactly_the_top_k_connections_of_every_neuron(k):
    model = ConvBNMultiTask(n_tasks=2, channels=4)  # conv rows of 27 and 36 inputs
    masks = sparse.select(model, k=k)
    params = sparse.masked_parameters(model)
    assert set(masks) == {"trunk.0.weight", "trunk.3.weight"}  # weights only: biases and BatchNorm train fully
    for name, mask in masks.items():
        weight, kept = rows(params[name]).abs(), rows(mask)
        assert (kept.sum(1) == min(k, weight.shape[1])).all()
        for row, keep in zip(weight, kept):
            if not keep.all():
                assert row[keep].min() >= row[~keep].max()


def test_reverse_keeps_the_smallest_and_global_and_random_keep_the_same_count():
    model = MLPMultiTask(n_tasks=2, width=8, in_features=10)
    params = sparse.masked_parameters(model)
    psn = sparse.select(model, k=3)
    count = sum(int(m.sum()) for m in psn.values())
    assert count == 8 * 3 + 8 * 3
    reverse = sparse.select(model, k=3, rule="reverse")
    for name, mask in reverse.items():
        weight, kept = rows(params[name]).abs(), rows(mask)
        assert (kept.sum(1) == 3).all()
        for row, keep in zip(weight, kept):
            assert row[keep].max() <= row[~keep].min()
    glob = sparse.select(model, k=3, rule="global")
    assert sum(int(m.sum()) for m in glob.values()) == count
    every = torch.cat([p.detach().abs().flatten() for p in params.values()])
    kept = torch.cat([(params[n].detach().abs())[m] for n, m in glob.items()])
    dropped = torch.cat([(params[n].detach().abs())[~m] for n, m in glob.items()])
    assert kept.min() >= dropped.max() and kept.numel() + dropped.numel() == every.numel()
    first, again, other = (sparse.select(model, k=3, rule="random", seed=s) for s in (0, 0, 1))
    assert sum(int(m.sum()) for m in first.values()) == count
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_fraction_sets_k_per_neuron_as_a_share_of_its_inputs():
    model = MLPMultiTask(n_tasks=2, width=8, in_features=10)
    masks = sparse.select(model, fraction=0.5)
    assert (rows(masks["trunk.0.weight"]).sum(1) == 5).all() and (rows(masks["trunk.2.weight"]).sum(1) == 4).all()


def test_bad_selection_settings_are_named():
    model = MLPMultiTask(n_tasks=2)
    for kwargs, message in [
        ({"k": 3, "rule": "magnitude"}, "unknown sparse-training rule"),
        ({}, "either fraction"),
        ({"k": 3, "fraction": 0.5}, "either fraction"),
        ({"fraction": 1.5}, "fraction must be"),
        ({"k": 0}, "K must be"),
    ]:
        with pytest.raises(ConfigError, match=message):
            sparse.select(model, **kwargs)


def test_the_trainable_fraction_counts_every_parameter_that_can_move():
    model = MLPMultiTask(n_tasks=2, width=8, in_features=10)
    masks = sparse.select(model, k=2)
    total = sum(p.numel() for p in model.parameters())
    frozen = (10 - 2) * 8 + (8 - 2) * 8
    assert sparse.trainable_fraction(model, masks) == pytest.approx(100 * (total - frozen) / total)


OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("method", ["equal", "pcgrad", "cagrad", "mgda", "nash_mtl", "famo", "graddrop", "uw"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_masked_entry_never_moves_under_any_method_and_optimizer(method, optimizer):
    torch.manual_seed(0)
    model = MLPMultiTask(n_tasks=3, width=6)
    masks = sparse.select(model, k=2)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(
        model,
        regression_losses,
        OPTIMIZERS[optimizer](model.parameters()),
        method,
        hooks=[sparse.MaskedUpdate(masks)],
        config=TrainConfig(epochs=2, progress=False, log_every=0),
    )
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 5, generator=generator), torch.randn(8, 3, generator=generator)) for _ in range(3)]
    trainer.fit(lambda epoch: data)
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.equal(p.detach()[~masks[name]], start[name][~masks[name]]), name
            assert not torch.equal(p.detach()[masks[name]], start[name][masks[name]]), name
        else:  # biases and heads train fully
            assert not torch.equal(p.detach(), start[name]), name


def test_a_checkpoint_of_another_mask_is_refused():
    model = MLPMultiTask(n_tasks=2)
    hook = sparse.MaskedUpdate(sparse.select(model, k=2))
    other = sparse.MaskedUpdate(sparse.select(model, k=3))
    with pytest.raises(ConfigError, match="another sparse-training mask"):
        other.load_state_dict(hook.state_dict())
    hook.load_state_dict(hook.state_dict())  # its own is accepted


def test_psn_on_segnet_mtan_masks_the_shared_weights_only():
    model = models.get("mtan", tasks=DATASETS["nyuv2"].tasks(), width=0.125)
    masks = sparse.select(model, k=50)
    shared = {id(p) for p in model.shared_parameters()}
    named = dict(model.named_parameters())
    assert masks and all(id(named[n]) in shared and named[n].dim() == 4 for n in masks)
    widths = {n: math.prod(named[n].shape[1:]) for n in masks}
    assert any(w < 50 for w in widths.values()) and any(w > 50 for w in widths.values())
    for name, mask in masks.items():
        assert (rows(mask).sum(1) == min(50, widths[name])).all()
