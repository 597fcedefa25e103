"""Detection and instance-mask metrics (MetaGraspNet): COCO mAP / mAR through pycocotools."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch

from deconflict.errors import ShapeError
from deconflict.metrics._base import MetricError

__all__ = ["CocoMetric"]


class CocoMetric:
    """COCO-style mAP (AP@[.50:.95]) and mAR (AR@100) for boxes or instance masks, by pycocotools.

    pycocotools is the field's reference implementation (the robust-MTL paper's BBox / VMask /
    AMask mAP and mAR are COCO metrics); this class only converts tensors to its format. One
    instance per kind: ``CocoMetric("bbox")``, ``CocoMetric("segm", mask_key="visible_masks")``,
    ``CocoMetric("segm", mask_key="amodal_masks")``.

    Predictions per image: ``{"boxes": [N, 4] (x1, y1, x2, y2), "scores": [N], "labels": [N],
    "<mask_key>": [N, H, W] (binary, for "segm")}``; targets the same without scores.
    """

    name = "coco"

    def __init__(self, iou_type: str = "bbox", mask_key: str = "masks") -> None:
        if iou_type not in ("bbox", "segm"):
            raise MetricError(f"coco: iou_type must be 'bbox' or 'segm', got {iou_type!r}.")
        self.iou_type = iou_type
        self.mask_key = mask_key
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []
        self.ground_truth: list[dict] = []
        self.detections: list[dict] = []
        self.categories: set[int] = set()

    def _masks(self, item: dict, count: int, where: str) -> list[dict] | None:
        if self.iou_type != "segm":
            return None
        from pycocotools import mask as mask_utils

        masks = item.get(self.mask_key)
        if masks is None or masks.shape[0] != count:
            raise ShapeError(f"coco: {where} need '{self.mask_key}' with one [H, W] mask per instance.")
        encoded = mask_utils.encode(np.asfortranarray(masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0)))
        for rle in encoded:
            rle["counts"] = rle["counts"].decode("ascii")
        return encoded

    def update(self, predictions: Sequence[dict], targets: Sequence[dict]) -> None:
        if len(predictions) != len(targets):
            raise ShapeError(f"coco: {len(predictions)} predictions for {len(targets)} images.")
        for prediction, target in zip(predictions, targets):
            image_id = len(self.images) + 1
            height, width = target.get("size", (0, 0))
            self.images.append({"id": image_id, "height": int(height), "width": int(width)})
            boxes = target["boxes"].detach().cpu().to(torch.float64)
            masks = self._masks(target, boxes.shape[0], "targets")
            for index, (box, label) in enumerate(zip(boxes.tolist(), target["labels"].tolist())):
                annotation = {
                    "id": len(self.ground_truth) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": (box[2] - box[0]) * (box[3] - box[1]),
                    "iscrowd": 0,
                }
                if masks is not None:
                    from pycocotools import mask as mask_utils

                    annotation["segmentation"] = masks[index]
                    annotation["area"] = float(mask_utils.area(masks[index]))
                self.ground_truth.append(annotation)
                self.categories.add(int(label))
            scores = prediction["scores"].detach().cpu()
            if not bool(torch.isfinite(scores).all()) or not bool(torch.isfinite(prediction["boxes"]).all()):
                raise MetricError("coco: predicted boxes or scores contain NaN or Inf.")
            pboxes = prediction["boxes"].detach().cpu().to(torch.float64)
            pmasks = self._masks(prediction, pboxes.shape[0], "predictions")
            for index, (box, score, label) in enumerate(
                zip(pboxes.tolist(), scores.tolist(), prediction["labels"].tolist())
            ):
                detection = {
                    "image_id": image_id,
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
                if pmasks is not None:
                    detection["segmentation"] = pmasks[index]
                self.detections.append(detection)

    def compute(self) -> dict[str, float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self.ground_truth:
            raise MetricError("coco: no ground-truth instance was seen; mAP is undefined.")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            truth = COCO()
            truth.dataset = {
                "images": self.images,
                "annotations": self.ground_truth,
                "categories": [{"id": c} for c in sorted(self.categories)],
            }
            truth.createIndex()
            if not self.detections:
                return {"map": 0.0, "map_50": 0.0, "mar": 0.0}
            detections = truth.loadRes(self.detections)
            evaluation = COCOeval(truth, detections, self.iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = evaluation.stats
        return {"map": float(max(stats[0], 0.0)), "map_50": float(max(stats[1], 0.0)), "mar": float(max(stats[8], 0.0))}
