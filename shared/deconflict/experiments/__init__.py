"""Top layer — whole experiments built from the lower layers (``deconflict.experiments``).

Pipelines (``pipelines/*.py``) call these; notebooks read what they wrote.
"""
