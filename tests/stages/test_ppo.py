"""PPO stage: the KL controller and per-token reward shaping by hand, batch packing against unpadded
log-probs, and a smoke run on the tiny model (what trains, what stays frozen, what is logged and saved)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import labkit.stages.ppo as ppo
from labkit.config import RLConfig
from labkit.errors import ConfigError
from labkit.rewards import PreflightError, completion_text
from labkit.runs.callbacks import read_jsonl

# ---------------------------------------------------------------------------------------------- KL controller


def test_fixed_kl_controller_never_moves():
    ctl = ppo.KLController(0.05, target=None)
    for kl in (0.0, 3.0, 100.0):
        assert ctl.update(kl, 1) == 0.05
    assert ctl.value == 0.05


def test_adaptive_kl_controller_steps_by_hand():
    # e = clip(KL/target - 1, -0.2, 0.2); β ← β (1 + e · n / H)
    ctl = ppo.KLController(0.1, target=2.0, horizon=10)
    assert ctl.update(3.0, 1) == pytest.approx(0.1 * (1 + 0.2 * 1 / 10))          # e = 0.5 clipped to 0.2
    ctl = ppo.KLController(0.1, target=2.0, horizon=10)
    assert ctl.update(2.2, 1) == pytest.approx(0.1 * (1 + 0.1 / 10))              # e = 0.1
    ctl = ppo.KLController(0.1, target=2.0, horizon=10)
    assert ctl.update(0.0, 5) == pytest.approx(0.1 * (1 - 0.2 * 5 / 10))          # e = -1 clipped to -0.2
    assert ctl.update(2.0, 1) == pytest.approx(0.1 * 0.9)                         # on target: unchanged


def test_adaptive_kl_controller_moves_the_kl_toward_target():
    """A toy policy whose KL falls as β rises (KL = 1/β): the controller brings the KL to the target from
    either side, and moves β the right way at every step."""
    target = 4.0
    for start in (0.01, 5.0):  # KL 100 (far above) and KL 0.2 (far below)
        ctl = ppo.KLController(start, target=target, horizon=5)
        for _ in range(300):
            kl, old = 1.0 / ctl.value, ctl.value
            ctl.update(kl, 1)
            assert (ctl.value > old) == (kl > target) or kl == pytest.approx(target)
        assert 1.0 / ctl.value == pytest.approx(target, rel=0.05)


def test_kl_controller_rejects_bad_settings():
    with pytest.raises(ConfigError, match="kl_target"):
        ppo.KLController(0.1, target=0.0)
    with pytest.raises(ConfigError, match="kl_horizon"):
        ppo.KLController(0.1, target=1.0, horizon=0)


# --------------------------------------------------------------------------------------------- reward shaping


def test_shape_rewards_hand_case():
    # Row 0: three completion tokens; row 1: one, then padding.
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-0.2, -7.0, -7.0, -7.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1.0], [-0.7, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    scores = torch.tensor([1.0, 0.25])
    rewards, kl = ppo.shape_rewards(scores, logp, ref, mask, kl_coef=0.1)
    # k1 per token = logp - ref: row 0 → 0.5, -1.0, 0.0; row 1 → 0.5; 0 on padding.
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]]))
    # r_t = -0.1·kl_t, and the score on the last valid token (index 2 in row 0, index 0 in row 1).
    expected = torch.tensor([[-0.05, 0.1, 1.0, 0.0], [-0.05 + 0.25, 0.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected)


def test_shape_rewards_sum_is_score_minus_beta_kl():
    torch.manual_seed(0)
    logp, ref = -torch.rand(3, 6) * 3, -torch.rand(3, 6) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])  # the last row is empty
    scores = torch.tensor([0.5, -1.0, 2.0])
    rewards, kl = ppo.shape_rewards(scores, logp, ref, mask, kl_coef=0.3)
    seq_kl = ((logp - ref) * mask).sum(-1)
    assert torch.allclose(rewards.sum(-1), torch.tensor([0.5, -1.0, 0.0]) - 0.3 * seq_kl)
    assert torch.equal(rewards[2], torch.zeros(6))  # no token to carry the score


# ---------------------------------------------------------------------------------------------- packing


def test_packed_logprobs_match_each_sequence_alone(tiny):
    """Left-padded prompts + right-padded completions give every completion token the log-prob it has in its
    own unpadded sequence (the naive gather(log_softmax)), temperature included: the slices line up."""
    model, tok = tiny
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    completions = [[20, 21], [22, 23, 24, 2]]
    batch = ppo.pack(prompts, completions, tok.pad_token_id)
    assert batch.input_ids.shape == (2, 5 + 4)
    assert batch.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch.attention_mask[1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    with torch.no_grad():
        logits, _ = ppo.completion_logits(model, batch, temperature=0.7)
        from labkit.models.logprobs import token_logprobs

        packed = token_logprobs(logits, batch.labels)                    # [2, 4]
        for i, (p, c) in enumerate(zip(prompts, completions)):
            full = model(input_ids=torch.tensor([p + c])).logits[0] / 0.7  # [L, V]
            naive = full[len(p) - 1:-1].log_softmax(-1).gather(-1, torch.tensor(c)[:, None])[:, 0]
            assert torch.allclose(packed[i, :len(c)], naive, atol=1e-5)
            assert torch.all(packed[i, len(c):] == 0)


def test_token_entropy_matches_naive():
    logits = torch.randn(2, 3, 11) * 3
    naive = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(ppo.token_entropy(logits), naive, atol=1e-5)
    assert torch.allclose(ppo.token_entropy(torch.zeros(1, 1, 8)), torch.tensor([[math.log(8)]]))


def test_prompt_batches_cycle_through_every_row_seeded():
    rows = [{"i": i} for i in range(5)]
    first = [[r["i"] for r in b] for _, b in zip(range(5), ppo.prompt_batches(rows, 2, seed=3))]
    again = [[r["i"] for r in b] for _, b in zip(range(5), ppo.prompt_batches(rows, 2, seed=3))]
    assert first == again
    flat = sum(first, [])
    # Each pass sees all rows.
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))


# ---------------------------------------------------------------------------------------------- smoke


def chars(prompts, completions, **kwargs):
    """Partial credit for reply length: a random tiny model never gets an answer right, but its replies
    differ in length, so the rewards vary and every weight gets a gradient."""
    return [min(len(completion_text(c)), 40) / 40 for c in completions]


def cfg(tiny_model_dir, tmp_path, **kw) -> RLConfig:
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2,
                num_generations=2, max_completion_length=8, n_eval=4, eval_max_new_tokens=8, eval_every=1,
                rewards="chars,correctness", dtype="float32", learning_rate=1e-3, beta=0.05,
                # The tiny random model never ends a reply within 8 tokens, so the truncation check would stop
                # the run; test_preflight_stops_before_any_update checks that it is wired in.
                preflight=False)
    return RLConfig(**{**base, **kw})


@pytest.fixture
def chars_reward(monkeypatch):
    from labkit.rewards import verifiable

    monkeypatch.setitem(verifiable.REWARDS, "chars", chars)


class Recorder:
    def __init__(self):
        self.events = []

    def on_start(self, info):
        self.events.append(("start", None, info))

    def on_step(self, step, metrics):
        self.events.append(("step", step, metrics))

    def on_eval(self, step, metrics):
        self.events.append(("eval", step, metrics))

    def on_end(self, summary):
        self.events.append(("end", None, summary))


STEP_METRICS = {"loss", "policy_loss", "value_loss", "reward", "reward_std", "rewards/chars/mean",
                "rewards/chars/std", "rewards/correctness/mean", "rewards/correctness/std", "kl", "entropy",
                "clip_fraction", "approx_kl", "kl_coef", "completions/mean_length",
                "completions/clipped_ratio", "frac_reward_zero_std"}
# What a notebook compares across grpo, rloo and ppo.
RESULT_METRICS = {"algorithm", "before", "after", "curve", "steps", "train_seconds", "wall_seconds",
                  "train_loss", "prompts", "rewards", "preflight", "trainable_params", "compute_dtype",
                  "device"}


@pytest.mark.smoke
def test_ppo_trains_adapter_and_value_head_only(tiny_model_dir, tmp_path, chars_reward, weights_before,
                                                assert_trained):
    from labkit.dash.rl import ROLLOUT_FIELDS, load_rollouts

    weights_before.watch(ppo, "PolicyWithValue")  # the value head is built around the loaded policy
    rec = Recorder()
    result = ppo.train(cfg(tiny_model_dir, tmp_path), callbacks=[rec])

    # LoRA weights and the value head moved; every base weight is bit-identical. The policy is checked under
    # its own names and again inside the wrapper (policy.*), where the value head's tensors are trainable too.
    policy, net = (s.model for s in weights_before.snapshots)
    assert policy is result.model and net.policy is result.model
    snap = assert_trained(weights_before, result.model)
    assert all("lora_" in n for n in snap.trainable)
    snap = assert_trained(weights_before, net)
    assert {n for n in snap.trainable if "lora_" not in n} == {"value_head.weight", "value_head.bias"}
    saved = torch.load(result.output_dir / "value_head.pt")
    assert torch.equal(saved["weight"], net.value_head.weight.detach())

    # Every step logs the GRPO-named metrics, finite; KL starts at exactly 0 (LoRA B = 0) and then moves.
    steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        assert STEP_METRICS <= set(e), STEP_METRICS - set(e)
        assert all(math.isfinite(e[k]) for k in STEP_METRICS), e
    assert steps[0]["kl"] == 0.0 and steps[1]["kl"] != 0.0
    assert steps[0]["completions/clipped_ratio"] == 1.0  # 8 tokens never end a random model's reply

    # Held-out evals at 0, every step, and the end; the callbacks saw start, steps, evals and end in order.
    kinds = [(k, s) for k, s, _ in rec.events]
    assert kinds == [("start", None), ("eval", 0), ("step", 1), ("eval", 1), ("step", 2), ("eval", 2),
                     ("end", None)]
    assert rec.events[0][2]["max_steps"] == 2 and "heldout/accuracy" in rec.events[1][2]
    assert rec.events[-1][2]["train_loss"] == pytest.approx(result.metrics["train_loss"])
    assert [c["step"] for c in result.metrics["curve"]] == [0, 1, 2]

    # Rollouts: one record per completion, readable by the rollout browser.
    records = load_rollouts(result.output_dir / "rollouts.jsonl")
    raw = [json.loads(line) for line in (result.output_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2 and all(set(ROLLOUT_FIELDS) <= set(r) for r in raw)
    assert {r["step"] for r in raw} == {1, 2} and all(r["tokens"] == 8 and r["truncated"] for r in raw)
    assert all(r["reward"] == pytest.approx(r["rewards"]["chars"] + r["rewards"]["correctness"]) for r in raw)

    # result.json has what grpo's has, and the adapter is saved.
    saved_result = json.loads((result.output_dir / "result.json").read_text())
    assert RESULT_METRICS <= set(saved_result["metrics"]), RESULT_METRICS - set(saved_result["metrics"])
    assert saved_result["stage"] == "ppo" and saved_result["metrics"]["steps"] == 2
    assert math.isfinite(result.metrics["train_loss"])
    assert (result.adapter_dir / "adapter_config.json").exists()

    # Telemetry: the rollouts' tokens and time, the reward statistics; a clean finish.
    t = saved_result["metrics"]["telemetry"]
    assert t["tokens_generated"] == 8 * 8 and t["tokens_trained"] > 0 and 0 < t["generation_share"] < 1
    assert t["scores"]["reward"]["n"] == 8 and saved_result["metrics"]["run"]["status"] == "done"


@pytest.mark.smoke
def test_preflight_stops_before_any_update(tiny_model_dir, tmp_path):
    """Bad setups get GRPO's pre-flight errors: here every completion is cut off. Nothing is trained or saved;
    the run folder records the run as failed, with the pre-flight's message."""
    from labkit.runs.manifest import RunDir

    with pytest.raises(PreflightError) as err:
        ppo.train(cfg(tiny_model_dir, tmp_path, rewards="correctness", reward_weights="", preflight=True))
    assert err.value.check == "truncation"
    status = RunDir(tmp_path / "run").status()
    assert status["status"] == "failed" and status["error"].startswith("PreflightError")
    assert not (tmp_path / "run" / "adapter").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_bad_ppo_settings_fail_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="lam"):
        ppo.train(RLConfig(model="no-such-model", lam=1.5, output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="kl_target"):
        ppo.train(RLConfig(model="no-such-model", kl_target=-1.0, output_dir=str(tmp_path)))
