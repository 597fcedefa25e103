"""Task metrics on hand-computable cases, their three averaging modes, Δm and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deconflict.errors import ShapeError
from deconflict.metrics import (
    BinaryAttributes,
    CocoMetric,
    DepthMetric,
    MetricError,
    NormalMetric,
    SaliencyMetric,
    SegmentationMetric,
    TopKAccuracy,
    confusion_matrix,
    delta_m,
    last_k_mean,
    mean_std,
    relative_changes,
)


# -- segmentation ---------------------------------------------------------------------------------
def test_known_confusion_matrix_and_scores():
    targets = torch.tensor([[[0, 0, 1], [1, 2, -1]]])
    labels = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    confusion = confusion_matrix(labels, targets, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]  # the −1 pixel is ignored
    metric = SegmentationMetric(3)
    metric.update(labels, targets)
    scores = metric.compute()
    # IoU: class 0: 1/(2+1−1) = 0.5, class 1: 2/(2+4−2) = 0.5, class 2: 0/1 = 0
    assert scores["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert scores["pixel_acc"] == pytest.approx(3 / 5)
    assert scores["mean_class_acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_a_class_never_present_is_left_out_of_the_mean():
    metric = SegmentationMetric(4)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    assert metric.compute()["miou"] == 1.0  # classes 2 and 3: 0/0, not counted (no NaN)


def test_logits_are_argmaxed_and_reductions_differ():
    logits = torch.zeros(2, 2, 1, 2)
    logits[0, 0, 0, :] = 1  # image 0 predicts class 0 everywhere
    logits[1, 1, 0, :] = 1  # image 1 predicts class 1 everywhere
    targets = torch.tensor([[[0, 0]], [[0, 1]]])
    results = {}
    for reduction in ("global", "per_image", "per_batch"):
        metric = SegmentationMetric(2, reduction=reduction)
        metric.update(logits, targets)
        results[reduction] = metric.compute()["miou"]
    # global: confusion [[2, 1], [0, 1]]: IoU (2/3, 1/2); per image: image 0 IoU0 = 1 → 1, image 1 (0, 1/2) → 1/4
    assert results["global"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert results["per_image"] == pytest.approx((1.0 + 0.25) / 2)
    assert results["per_batch"] == pytest.approx(results["global"])  # one batch


def test_segmentation_bad_input():
    metric = SegmentationMetric(3)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    with pytest.raises(MetricError, match="no valid target element"):
        metric.compute()
    with pytest.raises(ShapeError, match="differ"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(MetricError, match="NaN"):
        metric.update(torch.full((1, 3, 2, 2), float("nan")), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(MetricError, match="reduction must be"):
        SegmentationMetric(3, reduction="mean")


# -- depth ------------------------------------------------------------------------------------------
def test_depth_errors_over_valid_pixels_and_averaging():
    predictions = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 3.0]]]])
    targets = torch.tensor([[[[2.0, 0.0]]], [[[1.0, 4.0]]]])  # 0 = missing depth
    global_metric = DepthMetric()
    global_metric.update(predictions, targets)
    scores = global_metric.compute()
    # valid errors 1, 2, 1 over targets 2, 1, 4
    assert scores["abs_err"] == pytest.approx(4 / 3)
    assert scores["rel_err"] == pytest.approx((0.5 + 2.0 + 0.25) / 3)
    assert scores["rmse"] == pytest.approx(math.sqrt(6 / 3))
    per_batch = DepthMetric(reduction="per_batch")
    per_batch.update(predictions[:1], targets[:1])
    per_batch.update(predictions[1:], targets[1:])
    assert per_batch.compute()["abs_err"] == pytest.approx((1.0 + 1.5) / 2)  # MTAN: batch means, equal weight


# -- normals -------------------------------------------------------------------------------------
def normals(*vectors):
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 3, 1, len(vectors))


def test_angles_thresholds_and_median():
    truth = normals((0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 0))  # the last pixel is invalid
    predictions = normals((0, 0, 2), (1, 0, 0), (0, 0, -1), (1, 0, 0))  # 0°, 90°, 180°
    metric = NormalMetric()
    metric.update(predictions, truth)
    scores = metric.compute()
    assert scores["mean"] == pytest.approx(90.0)
    assert scores["median"] == pytest.approx(90.0, abs=1e-3)
    assert scores["within_11.25"] == pytest.approx(1 / 3)
    assert scores["within_30"] == pytest.approx(1 / 3)
    even = NormalMetric()
    even.update(normals((0, 0, 1), (1, 0, 0)), normals((0, 0, 1), (0, 0, 1)))
    assert even.compute()["median"] == pytest.approx(45.0, abs=1e-3)  # mean of the two middle values


def test_global_median_matches_numpy_on_many_pixels():
    torch.manual_seed(0)
    predictions, truth = torch.randn(3, 3, 10, 11), torch.randn(3, 3, 10, 11)
    metric = NormalMetric()
    metric.update(predictions[:2], truth[:2])
    metric.update(predictions[2:], truth[2:])
    cosine = (torch.nn.functional.normalize(predictions, dim=1) * torch.nn.functional.normalize(truth, dim=1)).sum(1)
    errors = np.degrees(np.arccos(np.clip(cosine.numpy().ravel(), -1, 1)))
    scores = metric.compute()
    assert scores["median"] == pytest.approx(np.median(errors), abs=5e-4)
    assert scores["mean"] == pytest.approx(errors.mean(), abs=1e-4)
    assert scores["within_22.5"] == pytest.approx((errors < 22.5).mean())


# -- classification, saliency, detection -----------------------------------------------------------
def test_top_k_accuracy():
    metric = TopKAccuracy(ks=(1, 2))
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    metric.update(logits, torch.tensor([1, 1, 0]))
    assert metric.compute() == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
    with pytest.raises(MetricError, match="top-5 needs"):
        TopKAccuracy((5,)).update(logits, torch.tensor([0, 0, 0]))


def test_binary_attributes_f1_and_zero_division():
    metric = BinaryAttributes(threshold=0.5)
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.3]])
    targets = torch.tensor([[1, 0], [0, 0], [1, 0]])
    metric.update(scores, targets)
    result = metric.compute()
    # task 0: TP 1, FP 1, FN 1 → F1 = 2/(2+1+1) = 0.5; task 1: nothing positive → F1 0 (defined)
    assert result["f1"] == pytest.approx([0.5, 0.0])
    assert result["accuracy"] == pytest.approx([1 / 3, 1.0])
    assert result["mean_f1"] == pytest.approx(0.25)


def test_saliency_perfect_and_empty():
    metric = SaliencyMetric()
    truth = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    metric.update(truth.clone(), truth)
    metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))  # both empty: Jaccard 1 (ASTMT)
    scores = metric.compute()
    assert scores["miou"] == pytest.approx(1.0)
    # the empty image has precision and recall 0 (ASTMT's tp/(tp + fp + 1e-12)): mean P = R = ½,
    # F_β = (1 + 0.3)·¼ / (0.3·½ + ½) = ½
    assert scores["max_f"] == pytest.approx(0.5)


def test_coco_boxes_and_masks():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    truth = [
        {"boxes": torch.tensor([[2.0, 2.0, 6.0, 6.0]]), "labels": torch.tensor([1]), "masks": mask, "size": (8, 8)}
    ]
    perfect = [
        {
            "boxes": torch.tensor([[2.0, 2.0, 6.0, 6.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
            "masks": mask,
        }
    ]
    for kind in ("bbox", "segm"):
        metric = CocoMetric(kind)
        metric.update(perfect, truth)
        assert metric.compute()["map"] == pytest.approx(1.0)
    wrong = [{**perfect[0], "labels": torch.tensor([2])}]
    metric = CocoMetric("bbox")
    metric.update(wrong, truth)
    assert metric.compute()["map"] == 0.0
    with pytest.raises(MetricError, match="no ground-truth"):
        CocoMetric().compute()


# -- Δm --------------------------------------------------------------------------------------------
def test_delta_m_flat_and_grouped():
    values, baseline = [40.0, 0.5, 30.0], [38.0, 0.55, 25.0]
    higher = [True, False, False]
    changes = relative_changes(values, baseline, higher)
    assert changes == pytest.approx([-100 * 2 / 38, -100 * 0.05 / 0.55, 100 * 5 / 25])
    assert delta_m(values, baseline, higher) == pytest.approx(changes.mean())
    grouped = delta_m(values, baseline, higher, groups=[[0], [1, 2]])
    assert grouped == pytest.approx((changes[0] + (changes[1] + changes[2]) / 2) / 2)
    assert delta_m(baseline, baseline, higher) == 0.0


def test_delta_m_bad_input():
    with pytest.raises(MetricError, match="must match"):
        delta_m([1.0, 2.0], [1.0], [True, True])
    with pytest.raises(MetricError, match="are 0"):
        delta_m([1.0], [0.0], [True])
    with pytest.raises(MetricError, match="partition"):
        delta_m([1.0, 2.0], [1.0, 2.0], [True, True], groups=[[0]])
    with pytest.raises(MetricError, match="NaN"):
        delta_m([float("nan")], [1.0], [True])


def test_reporting_helpers():
    history = np.arange(30, dtype=float).reshape(15, 2)
    assert last_k_mean(history, k=10).tolist() == pytest.approx([19.0, 20.0])
    with pytest.raises(MetricError, match="fewer than k"):
        last_k_mean(history[:5], k=10)
    mean, std = mean_std([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert mean.tolist() == [3.0, 4.0] and std.tolist() == pytest.approx([2.0, 2.0])
