"""A chain of runs: each link's adapter merged into the next link's base, the merge in lineage, and the
links registered and promoted in order."""

from __future__ import annotations

import pytest

from labkit.config import SFTConfig
from labkit.runs.chain import ChainError, merge_run, promote_chain
from labkit.runs.lineage import Lineage
from labkit.runs.registry import Registry
from tests.runs.test_registry import card_file


def test_two_sft_links_merge_and_lineage_walks_back_to_the_base(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from labkit.stages import sft

    db = tmp_path / "runs" / "registry.sqlite"
    monkeypatch.delenv("LABKIT_REGISTRY", raising=False)
    common = dict(max_steps=2, batch_size=2, n_eval=0, eval_split="", train_split="", learning_rate=1e-2)
    first = sft.train(SFTConfig(model=tiny_model_dir, output_dir=str(tmp_path / "runs" / "a"), **common))
    merged_a = merge_run(first.output_dir)
    assert merge_run(first.output_dir) == merged_a  # done once

    # the merged model is base + the adapter's delta: its logits are those of base + adapter (fp32)
    from peft import PeftModel

    ids = torch.tensor([[1, 2, 3, 4]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                           str(first.output_dir / "adapter"))
    with torch.no_grad():
        want = peft_model.eval()(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged_a).eval()(input_ids=ids).logits
    assert not torch.allclose(got, AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    second = sft.train(SFTConfig(model=str(merged_a), output_dir=str(tmp_path / "runs" / "b"), **common))
    merged_b = merge_run(second.output_dir)
    with Lineage(db) as lin:
        text = lin.lineage(str(merged_b)).to_text()
        stages = [r["stage"] for r in lin.runs()]
    assert stages.count("merge") == 2 and stages.count("sft") == 2
    # back through both merges and both SFT runs to the tiny base's weights and the data
    with Lineage(db) as lin:
        graph = lin.lineage(str(merged_b))
    kinds = [n["kind"] for n in graph.nodes.values() if n["type"] == "artifact"]
    assert kinds.count("adapter") == 2 and kinds.count("model") == 3 and "dataset" in kinds, text
    sources = {graph.nodes[s]["kind"] for s in graph.sources()}
    assert sources == {"model", "dataset"}, text  # the chain begins at the base model and the data only


def test_merge_takes_a_budget_stopped_run_and_refuses_an_unfinished_or_adapterless_one(tiny_model_dir,
                                                                                       tmp_path):
    import json

    from labkit.stages import sft

    with pytest.raises(ChainError, match="no adapter"):
        merge_run(tmp_path)
    # a wall-clock ceiling (the tour's GRPO) ends the run cleanly with its adapter: that run merges
    result = sft.train(SFTConfig(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=50,
                                 max_seconds=1e-6, batch_size=2, n_eval=0, eval_split="", train_split=""))
    status = result.output_dir / "status.json"
    assert json.loads(status.read_text())["status"] == "budget_exceeded"
    assert (merge_run(result.output_dir, registry=None) / "config.json").is_file()
    for unfinished in ("failed", "interrupted", "running"):
        status.chmod(0o644)
        status.write_text(json.dumps({"status": unfinished}))
        with pytest.raises(ChainError, match=f"status is '{unfinished}'"):
            merge_run(result.output_dir, out=tmp_path / "never", registry=None)
        assert not (tmp_path / "never").exists()


def test_promote_chain_gates_each_link_against_the_previous(tmp_path):
    links = []
    for i, scores in enumerate([[1] * 6 + [0] * 2, [1] * 7 + [0], [1] * 1 + [0] * 7]):
        d = tmp_path / f"m{i}"
        d.mkdir()
        (d / "config.json").write_text(str(i))
        links.append((f"link{i}", d, card_file(tmp_path / f"card{i}.json", scores)))
    steps = promote_chain(tmp_path / "reg.sqlite", links, n_boot=200)
    assert [s.promoted for s in steps] == [True, True, False]  # the last one regressed: blocked
    assert all(s.candidate for s in steps)
    assert "mmlu" in steps[2].row()["reasons"]
    with Registry(tmp_path / "reg.sqlite") as reg:
        assert reg.holder("production") == steps[1].version
        assert reg.rollback("production") == steps[0].version
