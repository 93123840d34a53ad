"""Moved to :mod:`layerscope.app.labels` (shared with the CLI); kept until the explorer's
imports are switched."""

from layerscope.app.labels import full_label, run_labels, short_model

__all__ = ["full_label", "run_labels", "short_model"]
