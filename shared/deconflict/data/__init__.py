"""Layer 3 — datasets (``deconflict.data``).

Real datasets are never downloaded by the code (no dataset can be fetched on the machines this
project is tested on, and their licences differ): users place them under the data root
(``data_root`` in the root ``params.yaml``, default ``data/``), with the layout documented in
``data/<name>/README.md``. :func:`require_dataset` checks that before any training starts.
"""

from deconflict.data.root import require_dataset

__all__ = ["require_dataset"]
