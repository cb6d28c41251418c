"""The quantisation lab on the tiny model: every CPU variant runs, sizes order as expected, perplexity is
finite, and a missing bitsandbytes is a labkit error naming the extra."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from labkit.errors import ConfigError, MissingExtraError
from labkit.infer import quant

DynamicInt8Linear = torch.ao.nn.quantized.dynamic.Linear

FEW = ["Hello there", "The sky is"]


@pytest.fixture(scope="module")
def variants(tiny_model_dir):
    """{variant: (model, tokenizer)} of the tiny model for every variant that runs on CPU."""
    return {v: quant.load_variant(tiny_model_dir, v) for v in ("fp32", "bf16", "int8", "nf4")}


def test_each_variant_has_the_weights_it_claims(variants):
    import bitsandbytes as bnb

    assert variants["fp32"][0].dtype == torch.float32
    assert variants["bf16"][0].dtype == torch.bfloat16
    int8 = variants["int8"][0]
    linears = [n for n, m in int8.named_modules() if type(m) is torch.nn.Linear]
    assert linears == ["lm_head"]        # tied to the embeddings, so it stays float
    assert sum(isinstance(m, DynamicInt8Linear) for m in int8.modules()) == 2 * 7
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in variants["nf4"][0].modules())


def test_sizes_order_and_perplexity_is_finite(variants):
    sizes = {v: quant.size_mb(m) for v, (m, _) in variants.items()}
    assert sizes["int8"] < sizes["fp32"] and sizes["nf4"] < sizes["fp32"]
    assert sizes["bf16"] == pytest.approx(sizes["fp32"] / 2, rel=0.05)
    ppl = {v: quant.perplexity(m, tok) for v, (m, tok) in variants.items()}
    assert all(math.isfinite(p) and p > 1 for p in ppl.values()), ppl
    # A random model is near-uniform over the vocabulary: quantising it moves perplexity only a little.
    assert all(p == pytest.approx(ppl["fp32"], rel=0.1) for p in ppl.values()), ppl


def test_every_variant_generates(variants):
    for v, (m, tok) in variants.items():
        assert quant.tokens_per_second(m, tok, FEW, max_new_tokens=4, batch_size=2) > 0, v


def test_int8_keeps_the_named_linears_in_float(tiny):
    model, tok = tiny
    peaks = quant.linear_input_absmax(model, tok, FEW)
    assert len(peaks) == 2 * 7 + 1 and all(p > 0 for p in peaks.values())   # 7 linears a layer + lm_head
    keep = [n for n in quant.outlier_linears(model, tok, threshold=0.0, texts=FEW) if n != "lm_head"][:2]
    q = quant.int8_dynamic(model, keep_float=keep)
    assert all(type(q.get_submodule(n)) is torch.nn.Linear for n in keep)
    assert type(model.get_submodule(keep[0])) is torch.nn.Linear   # the original is untouched
    assert sum(isinstance(m, DynamicInt8Linear) for m in q.modules()) == len(peaks) - 3   # - kept - lm_head
    untied = quant.int8_dynamic(model, quantize_tied_head=True)
    assert isinstance(untied.lm_head, DynamicInt8Linear)
    assert quant.size_mb(untied) > quant.size_mb(model)    # the embedding matrix now exists twice


def test_table_has_a_row_per_variant_and_passes_the_accuracy_function(tiny_model_dir):
    seen = []

    def accuracy(model, tok):
        seen.append(type(model).__name__)
        return 0.5

    rows = quant.quant_table(tiny_model_dir, ("fp32", "int8-mixed", "gguf"), prompts=FEW, max_new_tokens=3,
                             ppl_rows=quant.heldout_rows()[:4], accuracy=accuracy)
    assert [r["variant"] for r in rows] == ["fp32", "int8-mixed", "gguf"]
    assert rows[0]["accuracy"] == 0.5 and len(seen) == 2
    assert rows[1]["size_mb"] < rows[0]["size_mb"] and rows[1]["perplexity"] > 1
    assert rows[2]["size_mb"] is None and "embedded" in rows[2]["note"]
    assert len(quant.quant_figure(rows).data) == 1


def test_missing_bitsandbytes_names_the_extra(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)     # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r"bitsandbytes.*labkit\[gpu\]"):
        quant.load_variant(tiny_model_dir, "nf4")
    row = quant.quant_table(tiny_model_dir, ("nf4",), prompts=FEW, max_new_tokens=2)[0]
    assert row["perplexity"] is None and "labkit[gpu]" in row["note"]


def test_unknown_variant_is_a_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="variant"):
        quant.load_variant(tiny_model_dir, "int3")


def test_gguf_row_of_the_embedded_model_reads_the_file():
    info = quant.gguf_info()
    assert 50 < info["size_mb"] < 200 and "Q4_1" in info["tensor_types"]
    row = quant.quant_table("smollm2-135m-instruct", ("gguf",))[0]
    assert row["size_mb"] == round(info["size_mb"], 1) and "Q4_1" in row["note"]
    if quant.gguf_runtime() is None:
        assert row["tokens_per_s"] is None and "no GGUF runtime" in row["note"]
