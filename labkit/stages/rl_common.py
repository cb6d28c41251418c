"""What the RL stages (grpo, rloo, ppo) share: prompts with answers, held-out accuracy, pre-flight,
rollout logs.

The three stages differ only in how they turn rewards into an update; everything around the update is here so
that a comparison of them is a comparison of the update and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from labkit.config import RLConfig
from labkit.metrics.periodic import PeriodicEval, Stopwatch
from labkit.metrics.rl import heldout_accuracy
from labkit.runs.callbacks import Callbacks
from labkit.stages.common import data_path, held_out, run_callbacks, split_rows


def prompt_messages(prompt: Any, system_prompt: str = "") -> list[dict[str, str]]:
    """A row's prompt as a message list (a string becomes one user turn),
    with the config's system turn first."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system_prompt and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def load_prompt_rows(cfg: RLConfig, tok) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of a prompt + answer file, validated, prompts as message lists.

    Rows keep their other columns: TRL hands every column to the reward functions as keyword arguments.
    """
    from labkit.data.io import load_rows
    from labkit.data.types import Kind

    path = data_path(cfg.data)
    rows = load_rows(path, kind=Kind.PROMPT_ANSWER, tokenizer=tok)
    train, held = split_rows(rows, cfg.train_split, cfg.eval_split, str(path), "RLConfig")
    for row in (*train, *held):
        row["prompt"] = prompt_messages(row["prompt"], cfg.system_prompt)
        row["answer"] = str(row["answer"])
    return train, held[: cfg.n_eval]


def build_rewards(cfg: RLConfig) -> list[Callable]:
    """The reward functions cfg.rewards names, with the config's length budget for `length`."""
    from labkit.rewards import get_rewards, length_reward

    return [length_reward(cfg.length_budget) if name == "length" else fn
            for name, fn in zip(cfg.reward_names, get_rewards(cfg.reward_names))]


def before_after_samples(before: Sequence[dict], after: Sequence[dict]) -> list[dict]:
    """The same held-out prompts answered before and after training, side by side."""
    return [{"prompt": b["prompt"], "answer": b["answer"], "before": b["completion"],
             "after": a["completion"],
             "correct_before": b["correct"], "correct_after": a["correct"]} for b, a in zip(before, after)]


def preflight_summary(report) -> dict[str, Any] | None:
    """The pre-flight report's numbers for result.json (None when pre-flight was off)."""
    if report is None:
        return None
    return {"truncation_rate": report.truncation_rate, "reward_mean": report.reward_mean,
            "zero_variance_groups": report.zero_variance_groups, "warnings": report.warnings}


def run_preflight(cfg: RLConfig, model, tok, rows: Sequence[dict], funcs: list[Callable], *,
                  sample: Callable | None = None):
    """labkit.rewards.preflight on the first training prompts (sampled by `sample` when the run rolls out
    with another engine); raises PreflightError before any training step."""
    from labkit.rewards import preflight

    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    report = preflight(model, tok, [r["prompt"] for r in rows], funcs, columns=columns,
                       reward_weights=cfg.weights,
                       num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                       temperature=cfg.temperature, probe_prompts=cfg.probe_prompts, seed=cfg.seed,
                       sample=sample)
    print(f"pre-flight passed on {cfg.probe_prompts} prompts × {cfg.num_generations}: "
          f"reward mean {report.reward_mean:.3f}, truncated {report.truncation_rate:.0%}, "
          f"zero-variance groups {report.zero_variance_groups:.0%}", flush=True)
    for warning in report.warnings:
        print(f"pre-flight warning: {warning}", flush=True)
    return report


class RolloutLog:
    """Wraps reward functions so that every rollout a trainer scores lands in `rollouts.jsonl`.

    TRL calls each reward function in turn on the same batch; the wrappers collect the per-function scores,
    and when the last one has reported, one record per completion is written: prompt, completion, each
    function's reward, the weighted total and the group advantage (labkit.losses.advantages, the same
    estimator as the trainer's). `trainer_state` (which TRL passes) gives the step. labkit's PPO calls
    `record` directly with its own advantages. With a run's `telemetry` (labkit.runs.tracking.Telemetry), the
    reward functions' time is its "scoring" phase, and every recorded batch adds its generated tokens and
    its scores (the total as `reward`, each function's as `reward/<name>`). `append` keeps the records of
    an earlier attempt (a resumed run).
    """

    def __init__(self, funcs: Sequence[Callable], weights: Sequence[float], group_size: int,
                 path: pathlib.Path | None, *, max_completion_length: int | None = None,
                 advantage: Callable | None = None, telemetry=None, append: bool = False):
        from labkit.rewards import reward_names

        self.names = reward_names(list(funcs))
        self.weights = list(weights)
        self.group_size = group_size
        self.path = path
        self.advantage = advantage
        self.max_completion_length = max_completion_length
        self._pending: dict[str, list] = {}
        self._lock = threading.Lock()
        self.steps_seen: list[int] = []
        self.telemetry = telemetry
        if path is not None and not (append and path.exists()):
            path.write_text("")
        self.funcs = [self._wrap(f, name) for f, name in zip(funcs, self.names)]

    def _wrap(self, fn: Callable, name: str) -> Callable:
        log = self

        def scored(prompts, completions, **kwargs):
            with log.telemetry.phase("scoring") if log.telemetry is not None else contextlib.nullcontext():
                out = fn(prompts, completions, **kwargs)
            log._collect(name, prompts, completions, out, kwargs)
            return out

        scored.__name__ = getattr(fn, "__name__", name)  # TRL logs rewards/<__name__>/mean
        return scored

    def _collect(self, name: str, prompts, completions, scores, kwargs) -> None:
        with self._lock:
            self._pending[name] = [None if s is None else float(s) for s in scores]
            if len(self._pending) < len(self.names):
                return
            per_fn, self._pending = self._pending, {}
        state = kwargs.get("trainer_state")
        step = (state.global_step + 1) if state is not None else len(self.steps_seen) + 1
        ids = kwargs.get("completion_ids")
        limit = self.max_completion_length
        self.record(step, prompts, completions, per_fn,
                    tokens=[len(i) for i in ids] if ids is not None else None,
                    truncated=[len(i) >= limit for i in ids] if ids is not None and limit else None)

    def totals(self, per_fn: dict[str, list]) -> list[float]:
        """Weighted sum per completion; a function's None (not applicable) adds nothing, as in TRL."""
        n = len(next(iter(per_fn.values())))
        return [sum(w * (per_fn[k][i] or 0.0) for k, w in zip(self.names, self.weights)) for i in range(n)]

    def record(self, step: int, prompts, completions, per_fn: dict[str, list], *, tokens=None, truncated=None,
               advantages: Sequence[float] | None = None) -> list[dict]:
        """Append one record per completion (and return them)."""
        import torch

        from labkit.losses.advantages import group_advantages
        from labkit.rewards import completion_text

        total = self.totals(per_fn)
        if advantages is None:
            compute = self.advantage or (lambda r, g: group_advantages(r, g))
            advantages = compute(torch.tensor(total), self.group_size).tolist()
        records = [{"step": step, "group": i // self.group_size, "prompt": _prompt_text(p),
                    "completion": completion_text(c), "rewards": {k: per_fn[k][i] for k in self.names},
                    "reward": total[i], "advantage": float(advantages[i]),
                    "tokens": tokens[i] if tokens is not None else len(completion_text(c).split()),
                    "truncated": bool(truncated[i]) if truncated is not None else False}
                   for i, (p, c) in enumerate(zip(prompts, completions))]
        self.steps_seen.append(step)
        if self.telemetry is not None:
            self.telemetry.add_tokens(generated=sum(r["tokens"] for r in records))
            self.telemetry.add_scores("reward", total)
            for name in self.names:
                self.telemetry.add_scores(f"reward/{name}", per_fn[name])
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in records)
        return records


def _prompt_text(prompt: Any) -> str:
    """The last user turn of a message-list prompt (what a person reads in the rollout browser)."""
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), str(prompt))


@dataclasses.dataclass
class RLRun:
    """What an RL stage has once its pre-flight and baseline are done: the pre-flight report, the held-out
    eval (None without held-out rows) with the baseline in `before`, the run's callbacks,
    log and rollout log."""

    report: Any
    heldout: PeriodicEval | None
    before: dict[str, float]
    before_samples: list[dict]
    callbacks: Callbacks
    log_path: pathlib.Path
    rollouts: RolloutLog
    tracker: Any = None  # the run's labkit.runs.tracking.RunTracker


def start_run(algorithm: str, cfg: RLConfig, model, tok, info: dict, train_rows: list[dict],
              eval_rows: list[dict], funcs: list[Callable], out: pathlib.Path, callbacks=(), *,
              advantage: Callable | None = None, model_note: str = "", tracker=None,
              sample: Callable | None = None) -> RLRun:
    """Sections 4 and 5 of every RL stage: pre-flight on a probe batch (raises PreflightError before any
    step), held-out greedy accuracy at step 0, then the run's callbacks (held-out eval first, the JSONL log,
    the caller's) and the rollout log (fed to the run's telemetry; both logs appended to when `tracker`
    resumes a run)."""
    report = run_preflight(cfg, model, tok, train_rows, funcs, sample=sample) if cfg.preflight else None

    def measure(model, tok, step: int) -> tuple[dict[str, float], list[dict]]:
        return heldout_accuracy(model, tok, eval_rows, max_new_tokens=cfg.eval_max_new_tokens)

    before, before_samples = measure(model, tok, 0) if eval_rows else ({}, [])
    print(f"{algorithm.upper()} on {len(train_rows)} prompts × {cfg.num_generations} completions, rewards "
          f"{', '.join(cfg.reward_names)}; LoRA r={cfg.lora_r}, {info['trainable_params']:,} trainable"
          f"{model_note}; held-out accuracy before: {before.get('accuracy', float('nan')):.0%}", flush=True)
    heldout = held_out(measure, cfg, before, model, tok, eval_rows)
    resuming = tracker is not None and tracker.resuming
    cbs, log_path = run_callbacks(out, callbacks, heldout, append=resuming, title=algorithm.upper(),
                                  budget_s=cfg.max_seconds)
    from labkit.dist import is_main

    # each rank scores its own share of the rollouts; rank 0 logs its share
    rollouts = RolloutLog(funcs, cfg.weights, cfg.num_generations,
                          out / "rollouts.jsonl" if cfg.log_rollouts and is_main() else None,
                          max_completion_length=cfg.max_completion_length, advantage=advantage,
                          telemetry=tracker.telemetry if tracker is not None else None, append=resuming)
    return RLRun(report, heldout, before, before_samples, cbs, log_path, rollouts, tracker)


def finish_run(run: RLRun, algorithm: str, cfg: RLConfig, info: dict, *, steps: int, train_loss: float,
               prompts: int, clock: Stopwatch, **extra: Any) -> tuple[dict[str, Any], list[dict]]:
    """(metrics, samples) of a finished RL run: held-out accuracy before and after (the held-out eval measured
    the last step when training ended), the curve against training seconds, and the before/after replies."""
    after, after_samples = {}, []
    if run.heldout is not None:
        _, after, after_samples = run.heldout.latest
        after = dict(after)
        if run.tracker is not None:
            run.tracker.telemetry.add_seconds("eval", run.heldout.seconds)
    metrics = {"algorithm": algorithm, "before": run.before, "after": after,
               "curve": run.heldout.points if run.heldout else [], "steps": steps,
               "train_seconds": clock.training, "wall_seconds": clock.wall, "train_loss": train_loss,
               "prompts": prompts, "rewards": cfg.reward_names, "preflight": preflight_summary(run.report),
               **extra, **info}
    return metrics, before_after_samples(run.before_samples, after_samples)
