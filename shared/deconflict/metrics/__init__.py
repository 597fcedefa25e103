"""Layer 1 — task metrics and Δm (``deconflict.metrics``).

Accumulating metrics (``update`` per batch, ``compute`` once) for every task of the five papers:
semantic segmentation, depth, surface normals, saliency, top-k classification, binary attributes
(CelebA) and COCO detection / instance masks (MetaGraspNet, through pycocotools). Dense metrics
average in one of three ways, because the papers' code lineages differ: ``global`` (the default),
``per_batch`` (the MTAN lineage) or ``per_image``; each paper's params choose.
"""

from deconflict.metrics._base import REDUCTIONS, Metric, MetricError
from deconflict.metrics.classification import BinaryAttributes, TopKAccuracy
from deconflict.metrics.delta import delta_m, last_k_mean, mean_std, relative_changes
from deconflict.metrics.dense import (
    DepthMetric,
    NormalMetric,
    SegmentationMetric,
    confusion_matrix,
    segmentation_scores,
)
from deconflict.metrics.detection import CocoMetric
from deconflict.metrics.saliency import SaliencyMetric

__all__ = [
    "REDUCTIONS",
    "BinaryAttributes",
    "CocoMetric",
    "DepthMetric",
    "Metric",
    "MetricError",
    "NormalMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "TopKAccuracy",
    "confusion_matrix",
    "delta_m",
    "last_k_mean",
    "mean_std",
    "relative_changes",
    "segmentation_scores",
]
