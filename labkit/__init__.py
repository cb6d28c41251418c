"""labkit: a Jupyter-first lab kit for LLM post-training."""

__version__ = "0.1.0"
