"""Layer 3 — architectures (``deconflict.models``). Every model is a :class:`MultiTaskModel`.

Dense prediction (NYUv2, CityScapes): :class:`SegNetSingle`, :class:`SegNetSplit`,
:class:`SegNetMTAN` and :class:`CrossStitchSegNet`, with the MTAN lineage's losses
(:class:`DenseLoss`); :data:`DENSE_MODELS` maps their names in params files to the classes.
"""

from deconflict.models.base import MultiTaskModel
from deconflict.models.cross_stitch import CrossStitchSegNet
from deconflict.models.losses import DenseLoss, depth_loss, normal_loss, segmentation_loss
from deconflict.models.mtan import SegNetMTAN
from deconflict.models.segnet import FILTERS, SegNetBackbone, SegNetSingle, SegNetSplit
from deconflict.models.toy import DRMGFToy, toy_objective, toy_task_optima

#: the dense models by the name params files use (``single`` is built once per task)
DENSE_MODELS = {"single": SegNetSingle, "split": SegNetSplit, "mtan": SegNetMTAN, "cross_stitch": CrossStitchSegNet}

__all__ = [
    "DENSE_MODELS", "FILTERS", "CrossStitchSegNet", "DRMGFToy", "DenseLoss", "MultiTaskModel", "SegNetBackbone",
    "SegNetMTAN", "SegNetSingle", "SegNetSplit", "depth_loss", "normal_loss", "segmentation_loss",
    "toy_objective", "toy_task_optima",
]
