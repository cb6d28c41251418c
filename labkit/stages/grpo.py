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

With `use_vllm=True` the rollouts come from labkit's vLLM engine (a server process; the policy is pushed
into it every step, as merged weights or as its adapter: `vllm_sync`) through TRL's rollout_func:
labkit.stages.engine_rollouts.

RLOO (labkit.stages.rloo) runs through the same `train_with`; only TRL's trainer and its config differ.
Sections: 1 setup · 2 data · 3 model · 4 pre-flight · 5 baseline eval · 6 trainer · 7 eval · 8 save
(4-5 and 7 are shared with PPO: labkit.stages.rl_common.start_run / finish_run).
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import warnings
from typing import Any

from labkit.config import RLConfig
from labkit.quiet import quiet_progress
from labkit.runs.callbacks import Callbacks
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter
from labkit.stages import engine_rollouts
from labkit.stages.common import (
    data_path,
    save_pretrained,
    saved_model,
    shows_progress,
    track,
    trainer_args,
)
from labkit.stages.rl_common import build_rewards, finish_run, load_prompt_rows, start_run


def train(cfg: RLConfig, callbacks=(), reward_funcs=None, *, force: bool = False, engine=None) -> RunResult:
    """GRPO with cfg.loss_type (grpo | dr_grpo | dapo | bnpo) on a LoRA policy, on TRL's GRPOTrainer.

    Args:
        cfg: an RLConfig (`RLConfig.from_preset("cpu")`): prompts with answers, reward names and weights,
            group size, lengths, β, budget (max_steps, max_seconds, max_tokens), checkpoints (save_every).
        callbacks: labkit callbacks (a LiveDashboard(RL_PANELS)…) that receive every step and eval.
        reward_funcs: your own functions in TRL's protocol
            `fn(prompts, completions, **columns) -> list[float]`, used instead of the names in cfg.rewards
            (cfg.reward_weights then weighs them).
        force: run again even when this manifest already finished in cfg.output_dir (else a no-op).
        engine: with use_vllm and vllm_mode "engine", a running labkit engine to roll out with (a VLLMEngine
            shared by several runs; any labkit.infer Engine works); by default the run starts a VLLMEngine
            and stops it at the end (labkit.stages.engine_rollouts).
    Returns:
        a RunResult whose metrics hold held-out greedy accuracy `before` / `after`, the `curve` of accuracy
        against training seconds, the pre-flight summary, steps, losses and `telemetry` (generation's share
        of the training loop, tokens, reward statistics); `samples` holds the held-out replies before and
        after; rollouts are logged to cfg.output_dir/rollouts.jsonl.
    Raises:
        PreflightError before the first step when the run cannot learn (untemplated prompts, a reward of the
        wrong shape, everything truncated, no reward signal); DataError / ConfigError for bad input.

    Example:
        result = train(RLConfig.from_preset("cpu-smoke"))
        result.metrics["before"]["accuracy"], result.metrics["after"]["accuracy"]
    """
    return train_with("grpo", cfg, callbacks, reward_funcs, force=force, engine=engine)


def train_with(algorithm: str, cfg: RLConfig, callbacks=(), reward_funcs=None, *,
               force: bool = False, engine=None) -> RunResult:
    """The TRL-backed RL loop for `algorithm` ("grpo" or "rloo"); see `train` for the arguments."""
    from transformers import set_seed

    from labkit.metrics.periodic import Stopwatch
    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.rewards import reward_names
    from labkit.runs.trainer_adapter import instrument

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()
    engine_rollouts.check_vllm(algorithm, cfg, engine)

    # 2. data and rewards: validated before a model is loaded --------------------------------------
    tok = load_tokenizer(cfg.model)
    train_rows, eval_rows = load_prompt_rows(cfg, tok)
    funcs = list(reward_funcs) if reward_funcs is not None else build_rewards(cfg)
    cfg = cfg.replace(rewards=",".join(reward_names(funcs))) if reward_funcs is not None else cfg

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track(algorithm, cfg, data=[data_path(cfg.data)], rewards=funcs, force=force)
    if run.skipped:
        return run.stored_result(saved_model(cfg, out))
    # An exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised; the stack
    # stops a vLLM engine the run started.
    with run, contextlib.ExitStack() as stack:
        # 3. model ------------------------------------------------------------------------------------
        model, tok, info = adapters.load_for_training(
            cfg.model, method="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype,
            device=cfg.device, seed=cfg.seed, kernels=cfg.kernels)
        # rollouts from labkit's vLLM engine (use_vllm, vllm_mode "engine"), None for TRL's own generation
        rollout = engine_rollouts.attach(cfg, out, info, tok, stack, engine)

        # 4-5. pre-flight (a probe batch sampled and scored before any step) and the baseline eval ---------
        rl = start_run(algorithm, cfg, model, tok, info, train_rows, eval_rows, funcs, out, callbacks,
                       advantage=_advantage(algorithm, cfg), tracker=run,
                       sample=functools.partial(rollout.probe, model) if rollout else None)

        # 6. trainer: the run's budget stops it cleanly, with a checkpoint ---------------------------------
        trainer = instrument(build_trainer(algorithm, cfg, model, tok, info, train_rows, rl.rollouts.funcs,
                                           rl.callbacks, run.dir.checkpoints_dir, rollout_func=rollout), run)
        clock = Stopwatch()
        if rl.heldout:
            rl.heldout.clock = clock
        with run.telemetry.phase("loop"):
            output = trainer.train(resume_from_checkpoint=run.resume_from)

        # 7-8. eval (the held-out eval measured the last step when training ended) and save ----------------
        save_dir = out / "adapter"
        # TRL adds a frozen copy of the starting adapter ("ref") as the reference: save only the trained one.
        save_pretrained(save_dir, model, selected_adapters=["default"])
        save_pretrained(save_dir, tok)
        metrics, samples = finish_run(rl, algorithm, cfg, info, steps=output.global_step,
                                      train_loss=output.training_loss, prompts=len(train_rows), clock=clock,
                                      loss_type=cfg.loss_type if algorithm == "grpo" else algorithm)
        if metrics["after"]:  # KL to the reference as the trainer last logged it (absent when beta = 0)
            metrics["after"]["kl"] = next((e["kl"] for e in reversed(trainer.state.log_history)
                                           if "kl" in e), None)
        if rollout:  # seconds spent refitting the engine and generating; the largest log-prob gap checked
            metrics["rollouts"] = rollout.summary()
        result = RunResult(algorithm, out, metrics, cfg.to_dict(), log_path=rl.log_path, adapter_dir=save_dir,
                           model=model, tokenizer=tok, samples=samples)
        return run.complete(result, outputs={"adapter": save_dir})


def _advantage(algorithm: str, cfg: RLConfig):
    """The advantage estimator the trainer uses, for the rollout log."""
    from labkit.losses.advantages import group_advantages, rloo_advantages

    if algorithm == "rloo":
        return rloo_advantages
    return lambda rewards, g: group_advantages(rewards, g, scale=cfg.scale_rewards)


def trainer_config(algorithm: str, cfg: RLConfig, info: dict, out: pathlib.Path, *, quiet: bool):
    """TRL's GRPOConfig or RLOOConfig with labkit's shared settings."""
    common: dict[str, Any] = {
        **trainer_args(cfg, info, out, quiet=quiet),
        "num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature, "beta": cfg.beta, "epsilon": cfg.epsilon,
        "epsilon_high": cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon,
        "reward_weights": cfg.weights, "shuffle_dataset": True,
        # vllm_mode "engine": TRL's own generation stays off, rollouts come from rollout_func
        "use_vllm": cfg.use_vllm and not engine_rollouts.uses_engine(cfg)}
    if common["use_vllm"]:
        common["vllm_mode"] = cfg.vllm_mode
    if algorithm == "rloo":
        from trl import RLOOConfig

        return RLOOConfig(**common)
    from trl import GRPOConfig

    return GRPOConfig(**common, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards)


def build_trainer(algorithm: str, cfg: RLConfig, model, tok, info: dict, train_rows: list[dict], reward_funcs,
                  callbacks: Callbacks, out: pathlib.Path, extra_callbacks=(), rollout_func=None):
    """TRL's GRPOTrainer or RLOOTrainer on the prompt rows (every column reaches the reward functions);
    `rollout_func` (GRPO only: labkit.stages.engine_rollouts) generates the rollouts instead of TRL."""
    from datasets import Dataset
    from transformers import PrinterCallback

    args = trainer_config(algorithm, cfg, info, out, quiet=shows_progress(callbacks))
    dataset = Dataset.from_list(train_rows)
    kwargs = {"model": model, "args": args, "processing_class": tok, "reward_funcs": list(reward_funcs),
              "train_dataset": dataset, "callbacks": [TrainerCallbackAdapter(callbacks), *extra_callbacks]}
    with quiet_progress():
        if algorithm == "rloo":
            from trl import RLOOTrainer

            trainer = RLOOTrainer(**kwargs)
        else:
            from trl import GRPOTrainer

            with warnings.catch_warnings():  # TRL flags rollout_func as experimental on every run
                warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
                trainer = GRPOTrainer(**kwargs, rollout_func=rollout_func)
    trainer.remove_callback(PrinterCallback)  # labkit's callbacks print; the raw log dicts are noise
    return trainer
