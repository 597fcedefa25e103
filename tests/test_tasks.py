"""Tasks as objects: losses, activations, metrics with directions and printed columns, targets under augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconflict import tasks
from deconflict.errors import ConfigError, ShapeError, UnknownNameError
from deconflict.metrics import DepthMetric, NormalMetric, SegmentationMetric
from deconflict.tasks import Depth, SemanticSegmentation, SurfaceNormal, TaskLoss, Window
from deconflict.tasks.dense import depth_loss, normal_loss, segmentation_loss


def test_registry_and_resolution():
    assert {"segmentation", "depth", "normal"} <= set(tasks.available())
    assert tasks.get("segmentation", classes=7) == SemanticSegmentation(7)
    resolved = tasks.resolve({"segmentation": 13, "depth": 1, "normal": 3})
    assert resolved == (SemanticSegmentation(13), Depth(), SurfaceNormal())
    assert tasks.resolve([Depth(name="disparity")])[0].name == "disparity"
    with pytest.raises(UnknownNameError, match="unknown task 'edges'"):
        tasks.resolve({"edges": 1})
    with pytest.raises(ConfigError, match="depth has 1 output channel"):
        tasks.resolve({"depth": 2})
    with pytest.raises(ConfigError, match="unique"):
        tasks.resolve([Depth(), Depth()])
    with pytest.raises(ConfigError, match="classes ≥ 2"):
        SemanticSegmentation(1)


def test_metrics_directions_and_printed_columns():
    seg, depth, normal = SemanticSegmentation(13), Depth(), SurfaceNormal()
    assert seg.headline.key == "miou" and seg.headline.label == "mIoU" and seg.headline.scale == 100
    assert [c.higher_is_better for c in depth.metrics] == [False, False, False]
    assert normal.column("within_11.25").higher_is_better and normal.column("within_11.25").label == "11.25"
    assert isinstance(seg.metric("per_image"), SegmentationMetric) and seg.metric("per_image").reduction == "per_image"
    assert isinstance(depth.metric(), DepthMetric) and isinstance(normal.metric(), NormalMetric)
    with pytest.raises(ConfigError, match="no metric 'iou'"):
        seg.column("iou")
    # every metric a task reports is a column its metric computes
    for task, prediction, target in [
        (seg, torch.randn(2, 13, 4, 4), torch.randint(0, 13, (2, 4, 4))),
        (depth, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4) + 0.1),
        (normal, torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)),
    ]:
        metric = task.metric()
        metric.update(task.prediction_for_metric(task.output(prediction)), target)
        assert [c.key for c in task.metrics] == list(metric.compute())


def test_outputs_and_stored_targets():
    raw = torch.randn(2, 13, 4, 4)
    torch.testing.assert_close(SemanticSegmentation(13).output(raw).exp().sum(1), torch.ones(2, 4, 4))
    torch.testing.assert_close(SurfaceNormal().output(raw[:, :3]).norm(dim=1), torch.ones(2, 4, 4))
    assert torch.equal(Depth().output(raw[:, :1]), raw[:, :1])
    label = np.array([[0.0, -1.0], [2.0, 1.0]])
    assert SemanticSegmentation(3).target_from_array(label).dtype == torch.int64
    assert Depth().target_from_array(np.ones((2, 2))).shape == (1, 2, 2)  # H×W depth is accepted
    assert Depth().check_array(np.ones((2, 2))) and not SurfaceNormal().check_array(np.ones((2, 2, 2)))


def test_targets_follow_the_augmentation():
    window = Window(top=1, left=2, height=2, width=2)
    label = torch.arange(16).reshape(4, 4)
    resized = SemanticSegmentation(16).crop_resize(label, window, (4, 4), scale=2.0)
    assert resized.dtype == torch.int64 and set(resized.unique().tolist()) <= {6, 7, 10, 11}
    depth = torch.full((1, 4, 4), 3.0)
    torch.testing.assert_close(Depth().crop_resize(depth, window, (4, 4), scale=1.5), torch.full((1, 4, 4), 2.0))
    normal = torch.randn(3, 4, 4)
    flipped = SurfaceNormal().flip(normal)
    assert torch.equal(flipped[0], -normal[0].flip(-1)) and torch.equal(flipped[1:], normal[1:].flip(-1))
    assert torch.equal(Depth().flip(depth), depth.flip(-1))


def test_task_loss_errors():
    with pytest.raises(ConfigError, match="Task objects"):
        TaskLoss(["segmentation"])
    with pytest.raises(ShapeError, match="normal"):
        TaskLoss([SurfaceNormal()])({"segmentation": torch.zeros(1)}, {"normal": torch.zeros(1)})
    with pytest.raises(ShapeError, match="do not match"):
        segmentation_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))


def test_losses_on_hand_computed_cases():
    log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).T.reshape(1, 3, 1, 2)
    labels = torch.tensor([[[0, -1]]])
    torch.testing.assert_close(segmentation_loss(log_probs, labels), -torch.log(torch.tensor(0.5)))
    labels = torch.tensor([[[0, 1]]])
    torch.testing.assert_close(
        segmentation_loss(log_probs, labels), -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.8))) / 2
    )
    prediction = torch.tensor([1.0, 2.0, 5.0]).reshape(1, 1, 1, 3)
    target = torch.tensor([2.0, 0.0, 4.0]).reshape(1, 1, 1, 3)  # the middle pixel is missing
    torch.testing.assert_close(depth_loss(prediction, target), torch.tensor(1.0))
    unit = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]]).T.reshape(1, 3, 1, 3)
    truth = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    torch.testing.assert_close(normal_loss(unit, truth), torch.tensor(1 - (1.0 + 0.0) / 2))


def test_a_batch_without_valid_pixels_gives_a_zero_loss_with_a_gradient():
    prediction = torch.rand(1, 1, 2, 2, requires_grad=True)
    loss = depth_loss(prediction, torch.zeros(1, 1, 2, 2))
    loss.backward()
    assert loss.item() == 0 and torch.equal(prediction.grad, torch.zeros_like(prediction))
    log_probs = torch.log_softmax(torch.rand(1, 3, 2, 2, requires_grad=True), 1)
    assert segmentation_loss(log_probs, torch.full((1, 2, 2), -1)).item() == 0
