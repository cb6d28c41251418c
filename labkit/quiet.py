"""quiet_progress(): silence the per-tensor and per-map progress bars of transformers and datasets.

Those bars are noise in notebooks, logs and reports; labkit shows its own progress where it matters.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_progress():
    """Turn off transformers' and datasets' progress bars inside the block, then restore them."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_was, ds_was = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_was:
            hf_logging.enable_progress_bar()
        if ds_was:
            datasets.enable_progress_bars()
