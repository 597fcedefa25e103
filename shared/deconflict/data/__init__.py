"""Layer 3 — datasets (``deconflict.data``).

Real datasets are never downloaded by the code (no dataset can be fetched on the machines this
project is tested on, and their licences forbid re-hosting): users place them under the data root
(``data_root`` in the root ``params.yaml``, default ``data/``), with the layout documented in
``data/<name>/README.md``. :func:`require_dataset` checks that before any training starts;
:mod:`deconflict.data.synthetic` writes small stand-ins in exactly the same formats.
"""

from deconflict.data.dense import CityScapes, MTANDataset, NYUv2, horizontal_flip, random_scale_crop
from deconflict.data.root import DatasetError, require_dataset
from deconflict.data.synthetic import write_synthetic

DATASETS = {"nyuv2": NYUv2, "cityscapes": CityScapes}

__all__ = ["CityScapes", "DATASETS", "DatasetError", "MTANDataset", "NYUv2", "horizontal_flip",
           "random_scale_crop", "require_dataset", "write_synthetic"]
