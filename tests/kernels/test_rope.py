"""labkit.kernels.rope: the Triton rotary embedding against plain torch and transformers' own function, in the
layout attention hands it (q, k as transposed views of the projections)."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import HAVE_TRITON, apply_rope, apply_rope_reference

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


def _cos_sin(batch: int, seq: int, dim: int):
    # Built as transformers' rotary module does: angles t * inv_freq, duplicated across the two halves.
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    pos = torch.arange(seq).float()[None, :].expand(batch, seq) + torch.arange(batch)[:, None]
    emb = torch.cat([pos[..., None] * inv_freq] * 2, dim=-1)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("batch,seq,q_heads,k_heads,dim,cos_batch", [
    (2, 5, 4, 2, 16, 2),       # grouped-query attention: 4 query heads share 2 key heads
    (1, 1, 3, 1, 64, 1),       # one token
    (2, 7, 9, 3, 48, 1),       # SmolLM2's 9/3 heads; half-dim 24 not a power of two; cos shared by the batch
])
def test_matches_reference(check, case, batch, seq, q_heads, k_heads, dim, cos_batch):
    torch.manual_seed(0)
    cos, sin = (t[:cos_batch].to(case.device, case.dtype) for t in _cos_sin(batch, seq, dim))
    # q and k as attention makes them: [B, T, H, D] projections viewed as [B, H, T, D]
    q = torch.randn(batch, seq, q_heads, dim).transpose(1, 2)
    k = torch.randn(batch, seq, k_heads, dim).transpose(1, 2)
    check(lambda q, k: apply_rope(q, k, cos, sin), lambda q, k: apply_rope_reference(q, k, cos, sin), [q, k],
          case)


def test_reference_is_transformers_apply_rotary_pos_emb():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 2, 5, 16)
    cos, sin = _cos_sin(2, 5, 16)
    for mine, theirs in zip(apply_rope_reference(q, k, cos, sin), apply_rotary_pos_emb(q, k, cos, sin)):
        torch.testing.assert_close(mine, theirs)


def test_odd_head_dim_is_an_error():
    with pytest.raises(ValueError, match="even head dim"):
        x, cs = torch.zeros(1, 1, 1, 5), torch.zeros(1, 1, 5)
        apply_rope(x, x, cs, cs)
