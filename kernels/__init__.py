"""Triton kernels, importable as labkit.kernels; each op file pairs kernels with a plain-torch reference."""
