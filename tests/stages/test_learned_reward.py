"""The learned reward: a reward-stage output folder as a reward function, checked before any work, scoring
as the reward stage does, and driving GRPO (alone or mixed with a verifiable reward) and PPO on the tiny
model."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from labkit.config import RewardConfig, RLConfig
from labkit.errors import ConfigError, DataError
from labkit.rewards import LearnedReward, correctness, learned_reward, score_replies

pytestmark = pytest.mark.smoke

PROMPT = [{"role": "user", "content": "What is 40 + 14?"}]


@pytest.fixture(scope="module")
def reward_run(tiny_model_dir, tmp_path_factory):
    """A reward model trained for 2 steps on the tiny model (LoRA + head), its stage's RunResult."""
    import labkit.stages.reward as rm

    out = tmp_path_factory.mktemp("rm") / "run"
    cfg = RewardConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(out), max_steps=2,
                                   batch_size=4, n_eval=4, dtype="float32", learning_rate=1e-2)
    return rm.train(cfg)


@pytest.fixture(scope="module")
def rm_fn(reward_run):
    return learned_reward(reward_run.output_dir, dtype="float32")


def test_scores_what_the_reward_stage_scores(reward_run, rm_fn):
    from labkit.metrics.reward_model import score

    replies = ["#### 54", "40 + 14 = 54\n#### 54", "The answer is 45."]
    direct = score(reward_run.model, reward_run.tokenizer, [PROMPT] * 3, replies)
    # completions in TRL's conversational form are read as their text
    got = rm_fn([PROMPT] * 3, [[{"role": "assistant", "content": r}] for r in replies])
    assert got == pytest.approx(direct, abs=1e-4)
    assert len(set(round(g, 6) for g in got)) == 3   # three different replies, three different rewards
    assert rm_fn.calls == 1 and rm_fn.scored == 3
    assert not any(p.requires_grad for p in rm_fn.model.parameters())


def test_batching_does_not_change_scores(rm_fn):
    replies = [f"#### {n}" + " and more" * (n % 4) for n in range(10)]
    one = score_replies(rm_fn.model, rm_fn.tok, [PROMPT] * 10, replies, batch_size=1)
    many = score_replies(rm_fn.model, rm_fn.tok, [PROMPT] * 10, replies, batch_size=7)
    assert many == pytest.approx(one, abs=1e-4)


def test_scale_and_shift(reward_run, rm_fn):
    shifted = LearnedReward(rm_fn.model, rm_fn.tok, scale=2.0, shift=1.0)
    raw = rm_fn([PROMPT], ["#### 54"])[0]
    assert shifted([PROMPT], ["#### 54"])[0] == pytest.approx(2.0 * (raw - 1.0))


def test_bad_folders_fail_before_any_work(tmp_path, reward_run):
    with pytest.raises(ConfigError, match="not a folder"):
        learned_reward(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no saved reward model"):
        learned_reward(tmp_path / "empty")
    # a saved adapter whose tokenizer lost its chat template
    broken = tmp_path / "broken"
    shutil.copytree(reward_run.output_dir / "adapter", broken / "adapter")
    shutil.copy(reward_run.output_dir / "manifest.json", broken / "manifest.json")
    cfg_path = broken / "adapter" / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(tok_cfg))
    for extra in ("chat_template.jinja", "chat_template.json"):
        (broken / "adapter" / extra).unlink(missing_ok=True)
    with pytest.raises(DataError, match="chat_template"):
        learned_reward(broken)


def test_a_head_with_two_outputs_is_refused(tiny_model_dir, tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    model.config.pad_token_id = tokenizer.pad_token_id
    with pytest.raises(ConfigError, match="2 outputs"):
        LearnedReward(model, tokenizer)


def test_a_causal_lm_is_not_a_reward_model(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="no `score` head"):
        LearnedReward(model, tok)


def rl_cfg(tiny_model_dir, tmp_path, **kw) -> RLConfig:
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "rl"), max_steps=2, prompts_per_step=2,
                num_generations=4, max_completion_length=8, n_eval=2, eval_max_new_tokens=8,
                dtype="float32", learning_rate=5e-2, beta=0.05, preflight=False)
    return RLConfig.from_preset("cpu-smoke", **{**base, **kw})


def test_grpo_trains_against_the_learned_reward_mixed_with_correctness(tiny_model_dir, tmp_path, rm_fn,
                                                                     weights_before, assert_trained):
    import labkit.stages.grpo as grpo

    before = rm_fn.scored
    result = grpo.train(rl_cfg(tiny_model_dir, tmp_path, reward_weights="1,0.5"),
                        reward_funcs=[correctness, rm_fn])
    assert_trained(weights_before, result.model)
    assert rm_fn.scored - before == 2 * 2 * 4   # steps × prompts × group, scored in batches
    records = [json.loads(x) for x in (result.output_dir / "rollouts.jsonl").read_text().splitlines()]
    assert records and all(set(r["rewards"]) == {"correctness", "learned"} for r in records)
    for r in records:   # the total is the weighted mix
        assert r["reward"] == pytest.approx(r["rewards"]["correctness"] + 0.5 * r["rewards"]["learned"],
                                            abs=1e-5)
    assert result.metrics["rewards"] == ["correctness", "learned"]


def test_ppo_trains_against_the_learned_reward_alone(tiny_model_dir, tmp_path, rm_fn):
    import labkit.stages.ppo as ppo

    result = ppo.train(rl_cfg(tiny_model_dir, tmp_path, max_steps=1, reward_weights=""), reward_funcs=[rm_fn])
    records = [json.loads(x) for x in (result.output_dir / "rollouts.jsonl").read_text().splitlines()]
    assert records and all(set(r["rewards"]) == {"learned"} for r in records)
    assert all(math.isfinite(r["reward"]) for r in records)
    assert result.metrics["steps"] == 1
    assert torch.isfinite(torch.tensor(result.metrics["train_loss"]))
