"""Keep library noise away from students: progress bars of loads and maps, known deprecation warnings, and
the load report of a head that is new on purpose. `LABKIT_VERBOSE=1` (`labkit --verbose`) turns all of it
off, so everything the libraries say comes back.

Each filter names one message that labkit has checked is not the user's to act on; anything else still
shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

# (category, message regex, why it is safe to hide)
KNOWN_DEPRECATIONS = (
    # PEFT and TRL read the old property name; labkit itself never does. Harmless until transformers v6.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", "read by PEFT/TRL, not by labkit"),
    # TRL's configs still default the old field; labkit sets activation_checkpointing itself.
    (FutureWarning, r"`gradient_checkpointing\w*` is deprecated",
     "a TRL config default, not a labkit setting"),
)


def verbose() -> bool:
    """Whether the user asked for everything (LABKIT_VERBOSE=1): raw trainer logs and library warnings."""
    return os.environ.get("LABKIT_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def install_warning_filters() -> None:
    """Hide KNOWN_DEPRECATIONS for this process (not under LABKIT_VERBOSE). Called once when labkit loads."""
    if verbose():
        return
    for category, message, _why in KNOWN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=category)


def set_verbose(on: bool = True) -> None:
    """Turn labkit's quieting off (on=True) for this process and the processes it starts, or back on."""
    if on:
        os.environ["LABKIT_VERBOSE"] = "1"
        ours = {m for _c, m, _w in KNOWN_DEPRECATIONS}
        warnings.filters[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and getattr(f[1], "pattern", None) in ours)]
    else:
        os.environ.pop("LABKIT_VERBOSE", None)
        install_warning_filters()


@contextlib.contextmanager
def quiet_progress():
    """Turn off transformers' and datasets' progress bars inside the block, then restore them."""
    import datasets
    from transformers.utils import logging as hf_logging

    if verbose():
        yield
        return
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


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def expected_load_report():
    """Hold back transformers' load report inside the block: for a load whose missing weights are intended
    (a freshly initialised reward head), where the caller checks the loading info itself."""
    # A filter, not a higher level: at level ERROR transformers runs a tensor-parallel check that warns
    # about unsharded layers instead.
    log = logging.getLogger("transformers.modeling_utils")
    if not verbose():
        log.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        log.removeFilter(_not_a_load_report)
