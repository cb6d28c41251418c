"""Static vs continuous batching on the tiny model: same useful work, every request to its own budget,
static batching's waste counted, rows and figure well formed."""

from __future__ import annotations

import pytest

from labkit.errors import ConfigError
from labkit.infer import batching


def test_mixed_workload_is_seeded_and_mixed(tokenizer):
    a = batching.mixed_workload(tokenizer, 24, seed=3)
    assert a == batching.mixed_workload(tokenizer, 24, seed=3)
    assert len({len(r.prompt_ids) for r in a}) > 3
    budgets = [r.max_new_tokens for r in a]
    assert min(budgets) >= 8 and max(budgets) >= 64 and max(budgets) <= 128
    with pytest.raises(ConfigError):
        batching.mixed_workload(tokenizer, 0)


def test_compare_batching_rows(tiny):
    model, tok = tiny
    work = batching.mixed_workload(tok, 10, seed=1, short=(2, 4), long=(12, 16), long_share=0.3)
    rows = batching.compare_batching(model, tok, work, batch_size=4)
    static, cont = rows
    assert (static["mode"], cont["mode"]) == ("static", "continuous")
    assert static["useful_tokens"] == cont["useful_tokens"] == sum(r.max_new_tokens for r in work)
    assert 0 < static["wasted_share"] < 1 and cont["wasted_share"] == 0.0
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["p50_latency_s"] <= r["p95_latency_s"] <= r["wall_s"] + 1e-3
    assert static["vs_static"] == 1.0
    assert len(batching.batching_figure(rows).data) == 3
    with pytest.raises(ConfigError, match="modes"):
        batching.compare_batching(model, tok, work, modes=("dynamic",))
