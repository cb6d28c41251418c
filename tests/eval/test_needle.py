"""Needle in a haystack: rows per length and depth, haystack size and needle position,
and a tiny-model run."""

from __future__ import annotations

from labkit.config import EvalConfig
from labkit.eval import needle


def test_rows_cover_every_length_and_depth():
    rows = needle.load(EvalConfig(needle_lengths="128,256", needle_depths="0,0.5,1"))
    assert [(r["length"], r["depth"]) for r in rows] == [(128, 0), (128, 0.5), (128, 1), (256, 0), (256, 0.5),
                                                         (256, 1)]
    assert rows == needle.load(EvalConfig(needle_lengths="128,256", needle_depths="0,0.5,1"))  # seeded


def test_haystack_fits_the_length_and_puts_the_needle_at_its_depth(tokenizer):
    for depth in (0.0, 0.5, 1.0):
        row = {"id": "x", "length": 512, "depth": depth, "place": "Oslo", "number": "4721"}
        text = needle.haystack(tokenizer, row)
        prompt = f"{text}\n\n{needle.QUESTION.format(place='Oslo')}"
        n = len(tokenizer.encode(prompt, add_special_tokens=False))
        assert 400 < n <= 512
        at = text.index("The secret number for Oslo is 4721.") / len(text)
        assert abs(at - depth) < 0.1


def test_run_scores_and_skips_lengths_beyond_the_model(tiny):
    model, tok = tiny
    limit = model.config.max_position_embeddings
    cfg = EvalConfig(needle_lengths=f"64,{limit * 2}", needle_depths="0.5")
    out = needle.run(model, tok, needle.load(cfg), cfg)
    assert [s.slices for s in out.scores] == [{"length": "64", "depth": "0.5"}]
    assert out.info["skipped_longer_than_model"] == [limit * 2]
