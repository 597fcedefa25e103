"""Layer 8 — whole experiments (``deconflict.experiments``): the generic core every family uses.

* :class:`RunSpec` — what defines a run (dataset → family, model, method + hyperparameters, level,
  parameter split, learning rate); :class:`TrainingSettings` — the profile's part (sizes, epochs,
  optimizer, schedule); :mod:`~deconflict.experiments.families` — which datasets and models belong
  together.
* :func:`train_run` / :func:`train_seed` — training one run of any family, evaluated on its tasks
  every epoch (:class:`Evaluator`), checkpointed and resumable; :func:`summarise_run`, :func:`load_run`.
* :mod:`~deconflict.experiments.tables` — the papers' tables of runs as data: the run plan and the
  table beside the paper's printed numbers (:mod:`~deconflict.experiments.reference`).
* :mod:`~deconflict.experiments.surgery` — the papers' methods as run options (``recon:``: Recon's
  branched layers from a pre-run scan, :mod:`~deconflict.experiments.scans`; ``sparse:``: a PSN mask).
* :mod:`~deconflict.experiments.drmgf_toy` — DR-MGF's two-task toy comparison (Fig. 3).
"""

from deconflict.experiments.evaluation import Evaluator, TaskMeter
from deconflict.experiments.families import FAMILIES, Family, family_of, register_family
from deconflict.experiments.reference import REFERENCE_COLUMNS, load_reference
from deconflict.experiments.runner import load_run, model_size, summarise_run, train_run, train_seed
from deconflict.experiments.settings import TrainingSettings, family_settings
from deconflict.experiments.spec import RunSpec

__all__ = [
    "FAMILIES",
    "REFERENCE_COLUMNS",
    "Evaluator",
    "Family",
    "RunSpec",
    "TaskMeter",
    "TrainingSettings",
    "family_of",
    "family_settings",
    "load_reference",
    "load_run",
    "model_size",
    "register_family",
    "summarise_run",
    "train_run",
    "train_seed",
]
