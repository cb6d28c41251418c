"""labkit: a Jupyter-first lab kit for LLM post-training."""

import logging as _logging

__version__ = "0.1.0"

# At import, bitsandbytes warns that it could not fetch optional CPU kernels from a model hub. labkit
# never loads from hubs and bnb's built-in CPU path works, so the warning is only noise here.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# Known, non-actionable deprecation warnings of dependencies (listed in labkit.quiet): hidden unless verbose.
from labkit.quiet import install_warning_filters as _install_warning_filters  # noqa: E402

_install_warning_filters()
