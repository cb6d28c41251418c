"""labkit.kernels.runtime: the kernels really run under the interpreter here, so the op tests compare Triton
with torch (and not torch with itself)."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import runtime


def test_triton_is_active_where_the_tests_run():
    if not runtime.HAVE_TRITON:
        pytest.skip("triton is not installed: every op takes its torch path")
    if torch.cuda.is_available():
        assert runtime.use_triton(torch.zeros(1, device="cuda"))
    else:
        # tests/conftest.py sets TRITON_INTERPRET=1 before labkit.kernels is imported; if this fails,
        # something imported labkit.kernels earlier and the kernels were defined for a GPU.
        assert runtime.backend_name() == "triton-interpreter"
        assert runtime.use_triton(torch.zeros(1))


def test_tiles_are_powers_of_two_and_cover_short_inputs():
    assert runtime.row_block(48) == 64
    assert runtime.vocab_block(50) == 64
    assert runtime.vocab_block(49152) == 4096
    rows = runtime.tile_rows(64, 3)
    assert rows == 4                                  # never more than the next power of two of the rows
    assert runtime.tile_rows(1 << 20, 100) == 1       # a tile wider than the budget still takes one row
