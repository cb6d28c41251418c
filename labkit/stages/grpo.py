"""Stage: GRPO — RL from verifiable rewards on TRL's GRPOTrainer, with pre-flight checks and a live dashboard.

    result = train(RLConfig.from_preset("cpu"), callbacks=[LiveDashboard(RL_PANELS)])

For each prompt the policy samples a group of G completions; each is scored by code (labkit.rewards: is the
final number right, is the format kept…); a completion's advantage is its reward minus its group's mean,
divided by the group's std (GRPO, Shao et al. 2024, https://arxiv.org/abs/2402.03300), or not divided (Dr.
GRPO, Liu et al. 2025, https://arxiv.org/abs/2503.20783). No value network: the group is the baseline. The
policy is a LoRA adapter; the reference for the KL term is the same network with the adapter switched off.

Before a step is spent, the pre-flight checks (labkit.rewards.preflight) sample a probe batch and stop the
run with a message if the prompts are untemplated, a reward function returns the wrong shape, everything is
truncated, or the rewards cannot produce a gradient (never non-zero, or equal within every group).

RLOO (labkit.stages.rloo) runs through the same `train_with`; only TRL's trainer and its config differ.
Sections: 1 setup · 2 data · 3 model · 4 pre-flight · 5 baseline eval · 6 trainer · 7 eval · 8 save.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

from labkit.config import RLConfig
from labkit.quiet import quiet_progress
from labkit.runs.callbacks import Callbacks, JsonlLogger
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter
from labkit.stages.common import HeldOutProbe, trainer_args
from labkit.stages.rl_common import (
    AccuracyCurve,
    RolloutLog,
    before_after_samples,
    build_rewards,
    load_prompt_rows,
    preflight_summary,
    run_preflight,
    time_budget,
)


def train(cfg: RLConfig, callbacks=(), reward_funcs=None) -> RunResult:
    """GRPO with cfg.loss_type (grpo | dr_grpo | dapo) on a LoRA policy.

    reward_funcs: your own functions in TRL's protocol `fn(prompts, completions, **columns) -> list[float]`,
    used instead of the names in cfg.rewards (cfg.reward_weights then weighs them).
    """
    return train_with("grpo", cfg, callbacks, reward_funcs)


def train_with(algorithm: str, cfg: RLConfig, callbacks=(), reward_funcs=None) -> RunResult:
    """The TRL-backed RL loop for `algorithm` ("grpo" or "rloo")."""
    from transformers import set_seed

    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.rewards import reward_names

    # 1. setup ------------------------------------------------------------------------------------
    deadline = time.perf_counter() + cfg.max_seconds if cfg.max_seconds else None
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()
    if cfg.use_vllm:
        from labkit.errors import require

        require("vllm", "vllm", "rollouts with vLLM")

    # 2. data and rewards: validated before a model is loaded --------------------------------------
    tok = load_tokenizer(cfg.model)
    train_rows, eval_rows = load_prompt_rows(cfg, tok)
    funcs = list(reward_funcs) if reward_funcs is not None else build_rewards(cfg)
    cfg = cfg.replace(rewards=",".join(reward_names(funcs))) if reward_funcs is not None else cfg

    # 3. model ------------------------------------------------------------------------------------
    model, tok, info = adapters.load_for_training(
        cfg.model, method="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype,
        device=cfg.device, seed=cfg.seed)

    # 4. pre-flight: a probe batch sampled and scored before any step ------------------------------
    report = run_preflight(cfg, model, tok, train_rows, funcs) if cfg.preflight else None

    # 5. baseline eval ----------------------------------------------------------------------------
    measure = AccuracyCurve(model, tok, eval_rows, cfg.eval_max_new_tokens)
    before, before_samples = measure(0)
    print(f"{algorithm.upper()} on {len(train_rows)} prompts × {cfg.num_generations} completions, rewards "
          f"{', '.join(cfg.reward_names)}; LoRA r={cfg.lora_r}, {info['trainable_params']:,} trainable; held-out "
          f"accuracy before: {before.get('accuracy', float('nan')):.0%}", flush=True)

    # 6. trainer ----------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    cbs = Callbacks([JsonlLogger(log_path), *Callbacks(callbacks)])
    rollouts = RolloutLog(funcs, cfg.weights, cfg.num_generations,
                          out / "rollouts.jsonl" if cfg.log_rollouts else None,
                          max_completion_length=cfg.max_completion_length, advantage=_advantage(algorithm, cfg))
    probe = HeldOutProbe(cfg.eval_every if eval_rows else 0, measure, before, cbs)
    trainer = build_trainer(algorithm, cfg, model, tok, info, train_rows, rollouts.funcs, cbs, out,
                            [probe, time_budget(deadline)])
    clock = measure.start()
    output = trainer.train()
    train_seconds, wall_seconds = clock.training, clock.wall

    # 7. eval: the probe measured the last step already ----------------------------------------------
    after, after_samples = {}, []
    if eval_rows:
        step, after, after_samples = probe.latest if probe.latest[0] == output.global_step else \
            (None, *measure(output.global_step))

    # 8. save ---------------------------------------------------------------------------------------
    save_dir = out / "adapter"
    model.save_pretrained(str(save_dir))
    tok.save_pretrained(str(save_dir))
    if after:  # KL to the reference as the trainer last logged it (absent when beta = 0)
        after["kl"] = next((e["kl"] for e in reversed(trainer.state.log_history) if "kl" in e), None)
    samples = before_after_samples(before_samples, after_samples)
    metrics = {"algorithm": algorithm, "loss_type": cfg.loss_type if algorithm == "grpo" else algorithm,
               "before": before, "after": after, "curve": measure.points, "steps": output.global_step,
               "train_seconds": train_seconds, "wall_seconds": wall_seconds, "train_loss": output.training_loss,
               "prompts": len(train_rows), "rewards": cfg.reward_names,
               "preflight": preflight_summary(report), **info}
    result = RunResult(algorithm, out, metrics, cfg.to_dict(), log_path=log_path, adapter_dir=save_dir,
                       model=model, tokenizer=tok, samples=samples)
    result.save()
    return result


def _advantage(algorithm: str, cfg: RLConfig):
    """The advantage estimator the trainer uses, for the rollout log."""
    from labkit.losses.advantages import group_advantages, rloo_advantages

    if algorithm == "rloo":
        return rloo_advantages
    return lambda rewards, g: group_advantages(rewards, g, scale=cfg.scale_rewards)


def trainer_config(algorithm: str, cfg: RLConfig, info: dict, out: pathlib.Path, *, quiet: bool):
    """TRL's GRPOConfig or RLOOConfig with labkit's shared settings."""
    common: dict[str, Any] = {
        **trainer_args(cfg, info, out, quiet=quiet), "save_strategy": "no",
        "num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature, "beta": cfg.beta, "epsilon": cfg.epsilon,
        "epsilon_high": cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon,
        "reward_weights": cfg.weights, "use_vllm": cfg.use_vllm, "shuffle_dataset": True}
    if cfg.use_vllm:
        common["vllm_mode"] = cfg.vllm_mode
    if algorithm == "rloo":
        from trl import RLOOConfig

        return RLOOConfig(**common)
    from trl import GRPOConfig

    return GRPOConfig(**common, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards)


def build_trainer(algorithm: str, cfg: RLConfig, model, tok, info: dict, train_rows: list[dict], reward_funcs,
                  callbacks: Callbacks, out: pathlib.Path, extra_callbacks=()):
    """TRL's GRPOTrainer or RLOOTrainer on the prompt rows (every column reaches the reward functions)."""
    from datasets import Dataset
    from transformers import PrinterCallback

    args = trainer_config(algorithm, cfg, info, out, quiet=len(callbacks) > 1)
    dataset = Dataset.from_list(train_rows)
    kwargs = {"model": model, "args": args, "processing_class": tok, "reward_funcs": list(reward_funcs),
              "train_dataset": dataset, "callbacks": [TrainerCallbackAdapter(callbacks), *extra_callbacks]}
    with quiet_progress():
        if algorithm == "rloo":
            from trl import RLOOTrainer

            trainer = RLOOTrainer(**kwargs)
        else:
            from trl import GRPOTrainer

            trainer = GRPOTrainer(**kwargs)
    trainer.remove_callback(PrinterCallback)  # labkit's callbacks print; the raw log dicts are noise
    return trainer
