"""Experiment: GRPO against a learned reward, watched for over-optimisation, with a KL sweep and best-of-n.

    from labkit.rewards import learned_reward
    out = sweep(RLConfig.from_preset("cpu", max_steps=40), learned_reward("runs/reward"),
                betas=(0.0, 0.1), eval_every=5)
    out["curves"]     # per β and eval step: proxy reward, gold accuracy, KL from the reference
    out["best_of_n"]  # best-of-n from the reference policy on the same axes

Each β is one GRPO run (labkit.stages.grpo) whose only reward is the learned one (plus any `extra_rewards`,
weighted by cfg.reward_weights). Every `eval_every` steps, and before the first, the policy samples
completions for the same held-out arithmetic prompts, where the gold reward is verifiable;
labkit.metrics.overoptimisation.policy_point scores them with the proxy and the gold check and measures
KL(π ‖ π_ref) on them. The points go to the run's metrics.jsonl as `overopt/*` evals as well.
Best-of-n samples the reference policy (the starting model), so it is the optimiser that spends KL without
any training. `labkit.dash.rlhf.overoptimisation_figure(out)` draws both against √KL, as Gao et al. do.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from labkit.config import RLConfig
from labkit.errors import ConfigError


def sweep(cfg: RLConfig, reward, *, betas: Sequence[float] = (0.0, 0.1), eval_every: int = 5,
          eval_prompts: int = 8, samples: int = 2, best_of: Sequence[int] = (1, 2, 4, 8),
          extra_rewards: Sequence[Callable] = (), callbacks=(), force: bool = False) -> dict[str, Any]:
    """Train against the learned reward once per KL coefficient β and measure the Gao et al. curve.

    Args:
        cfg: the RL config (data with verifiable answers: arithmetic_prompts); each β's run goes to
            cfg.output_dir/beta-<β>.
        reward: a labkit.rewards.LearnedReward, or a reward-stage output folder to load one from.
        betas: the KL coefficients to sweep (0 = no KL penalty).
        eval_every: steps between curve points (the start and the end are always measured).
        eval_prompts, samples: held-out prompts, and completions sampled per prompt, per point.
        best_of: the n of the best-of-n curve (each must divide the largest); () to skip it.
        extra_rewards: verifiable rewards trained on beside the learned one (cfg.reward_weights weighs
            [learned, *extra]).
        callbacks: labkit callbacks given to every run (a dashboard…).
    Returns:
        {"curves": [{"beta", "step", "proxy", "gold", "kl", "sqrt_kl", "length"}], "best_of_n": rows of
        best_of_n_curve, "runs": {β: {"steps", "train_loss", "output_dir"}}}.
    Raises:
        ConfigError for an empty sweep or a negative β, before anything trains.
    """
    from labkit.metrics.overoptimisation import best_of_n_curve, policy_point
    from labkit.metrics.periodic import PeriodicEval
    from labkit.models.loading import load_tokenizer
    from labkit.rewards import learned_reward
    from labkit.stages import grpo
    from labkit.stages.rl_common import load_prompt_rows

    if not betas or any(b < 0 for b in betas):
        raise ConfigError("betas", f"need one or more KL coefficients ≥ 0, got {list(betas)}")
    if eval_every < 0 or eval_prompts < 1 or samples < 1:
        raise ConfigError("eval_every", "eval_every ≥ 0, eval_prompts ≥ 1 and samples ≥ 1 are needed")
    if isinstance(reward, (str, pathlib.Path)):
        reward = learned_reward(reward, dtype=cfg.dtype)
    tok = load_tokenizer(cfg.model)
    _, held = load_prompt_rows(cfg, tok)
    if not held:
        raise ConfigError("eval_split", f"{cfg.data} has no held-out rows to measure gold accuracy on",
                          config="RLConfig")
    rows = held[:eval_prompts]
    point_kw = {"samples": samples, "max_new_tokens": cfg.max_completion_length,
                "temperature": cfg.temperature, "seed": cfg.seed}
    root = pathlib.Path(cfg.output_dir)
    curves: list[dict[str, Any]] = []
    runs: dict[float, dict[str, Any]] = {}
    for beta in betas:
        def measure(model, tok, step: int) -> tuple[dict[str, float], list[dict]]:
            return policy_point(model, tok, rows, reward, **point_kw)

        ev = PeriodicEval(measure, eval_every, prefix="overopt/")
        # the curve's points measure gold accuracy on the held-out prompts; the stage's own greedy held-out
        # eval would measure it again, so it is off
        run_cfg = cfg.replace(beta=float(beta), output_dir=str(root / f"beta-{beta:g}"), eval_split="")
        result = grpo.train(run_cfg, callbacks=[*callbacks, ev], reward_funcs=[reward, *extra_rewards],
                            force=force)
        curves += [{"beta": float(beta), "step": p["step"], **{k: p[k] for k in
                    ("proxy", "gold", "kl", "sqrt_kl", "length")}} for p in ev.points]
        m = result.metrics
        runs[float(beta)] = {"steps": m.get("steps"), "train_loss": m.get("train_loss"),
                             "output_dir": str(result.output_dir)}
    best = []
    if best_of:
        from labkit.models import load_model

        ref, ref_tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        best = best_of_n_curve(ref, ref_tok, rows, reward, ns=best_of,
                               max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                               seed=cfg.seed)
    return {"curves": curves, "best_of_n": best, "runs": runs}
