"""Rejection-sampling fine-tuning: sample k replies per prompt, keep the verified ones, SFT on them, repeat.

    result = train(ReasoningConfig(rounds=3))
    result.metrics["rounds"]     # per round: sampled, verified, verified_rate, kept,
                                 # heldout_accuracy, seconds

Also known as RFT (Yuan et al. 2023, https://arxiv.org/abs/2308.01825) and, run for several rounds, as
expert iteration / STaR without rationalisation (Zelikman et al. 2022, https://arxiv.org/abs/2203.14465).
The verifier is the answer check (labkit.rewards.correctness), so no label beyond the final number is
needed: the model's own right answers become its training data. One LoRA model is kept across rounds,
so round r samples from the policy that rounds 1..r-1 trained.

What a round records, and how to read it:
- verified_rate: the share of this round's samples the verifier accepts, i.e. the policy's pass rate on
  training prompts *before* this round's SFT. Its rise from round to round is the learning signal.
- kept: verified samples that finished (stopped on EOS; a reply cut at max_new_tokens is not trained on)
  and are not an exact repeat of another kept reply to the same prompt.
- heldout_accuracy: greedy accuracy on the held-out prompts *after* this round's SFT (round 0 = before).
A round that verifies nothing skips SFT and says so (`sft_steps` 0 and a `note`).

Starting from chain-of-thought data (warm_start="cot") first fine-tunes on labkit.reasoning.cot rows for
`sft_steps` steps, so the rounds sample from a model that already writes checkable working. Starting from
reflection traces is a recipe: collect_attempts + build_reflection_rows, write the rows to a JSONL file and
train on it with labkit.stages.sft (SFTConfig(data=that path)), save `labkit.models.lora.merge(result.model)`
with its tokenizer to a folder, and give that folder as cfg.model here.

Sections: 1 setup · 2 data · 3 model · 4 round 0 (before) · 5 rounds · 6 save.
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Callable
from typing import Any

from labkit.config import ReasoningConfig, SFTConfig
from labkit.errors import ConfigError, DataError
from labkit.metrics.rl import heldout_eval
from labkit.reasoning.rejection import keep_verified, round_prompts, sample_round
from labkit.runs.callbacks import Callbacks, JsonlLogger, scalar_metrics
from labkit.runs.result import RunResult

log = logging.getLogger(__name__)

WARM_STARTS = ("", "cot")


def train(cfg: ReasoningConfig, callbacks=(), *, reward: Callable[..., list] | None = None,
          system_prompt: str = "", warm_start: str = "", keep_unfinished: bool = False,
          batch_size: int = 32, force: bool = False) -> RunResult:
    """Run cfg.rounds rounds of sample → verify → SFT on one LoRA model.

    Returns a RunResult whose metrics hold held-out accuracy `before` / `after`, one record per round
    (`rounds`), the warm start's record and totals; each round's kept samples are in round_<r>.jsonl.
    Example: `train(ReasoningConfig.from_preset("cpu-smoke", rounds=2)).metrics["rounds"]`.

    Callbacks get on_start, on_step per SFT step (steps counted across rounds), on_eval(round, record)
    once for round 0 (held-out accuracy before training) and once per round, and on_end.
    Keywords: `reward` replaces correctness as the verifier of samples (a TRL-style reward function; a
    sample is verified when it scores at least 1.0; held-out accuracy is always correctness);
    `system_prompt` is put before every prompt, sampled and held out alike; `warm_start="cot"` fine-tunes
    on worked solutions before round 1; `keep_unfinished` also trains on verified replies cut off at
    max_new_tokens; `batch_size` is the generation batch; `force` runs again a manifest that already
    finished in cfg.output_dir (else a no-op returning the stored result). cfg.max_seconds and
    cfg.max_tokens are checked after each round; a resumed run starts over.
    """
    from transformers import set_seed

    from labkit.data.io import load_rows, write_jsonl
    from labkit.data.types import Kind
    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.reasoning.cot import build_cot_rows
    from labkit.stages.common import data_path, saved_model, single_process, split_rows, track

    # 1. setup ------------------------------------------------------------------------------------
    single_process("rejection sampling")
    _check(cfg, warm_start)
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()

    # 2. data: prompt + answer rows, validated before a model is loaded -----------------------------
    tok = load_tokenizer(cfg.model)
    path = data_path(cfg.data)
    rows = list(load_rows(path, kind=Kind.PROMPT_ANSWER, tokenizer=tok))
    train_rows, eval_rows = split_rows(rows, cfg.train_split, cfg.eval_split, str(path), "ReasoningConfig")
    eval_rows = eval_rows[: cfg.n_eval]
    warm_rows = build_cot_rows(train_rows, source=str(path)) if warm_start == "cot" else []
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track("rejection_sampling", cfg, data=[path], rewards=[reward or "correctness"], force=force,
                extra={"system_prompt": system_prompt, "warm_start": warm_start,
                                    "keep_unfinished": keep_unfinished, "batch_size": batch_size})
    if run.skipped:
        return run.stored_result(saved_model(cfg, out))
    telemetry = run.telemetry
    with run:  # an exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised
        # 3. model: one LoRA adapter, trained a little more each round ---------------------------------
        model, tok, info = adapters.load_for_training(
            cfg.model, method="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype,
            device=cfg.device, seed=cfg.seed)
        print(f"rejection sampling: {cfg.rounds} rounds × {cfg.prompts_per_round} prompts × k={cfg.k}, "
              f"{cfg.sft_steps} LoRA SFT steps a round; {info['trainable_params']:,} of "
              f"{info['total_params']:,} parameters trainable; compute dtype {info['compute_dtype']}",
              flush=True)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "metrics.jsonl"
        logger = JsonlLogger(log_path)
        user_cbs = Callbacks(callbacks)
        cbs = Callbacks([logger, *user_cbs])
        cbs.on_start({"global_step": 0, "max_steps": (cfg.rounds + bool(warm_rows)) * cfg.sft_steps,
                      "rounds": cfg.rounds, "output_dir": str(out)})
        start = time.perf_counter()

        def report(r: int, record: dict) -> None:
            logger.on_eval(r, record)  # the whole record, notes included; callbacks get its numbers
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
            user_cbs.on_eval(r, scalar_metrics(numbers, strict=False))

        # 4. round 0: greedy held-out accuracy before any training --------------------------------------
        t0 = time.perf_counter()
        before = heldout_eval(model, tok, eval_rows, max_new_tokens=cfg.max_new_tokens, system=system,
                              batch_size=batch_size)
        report(0, {"round": 0, "heldout_accuracy": before["accuracy"], "seconds": time.perf_counter() - t0})
        step = 0
        warm = None
        if warm_rows:
            t0 = time.perf_counter()
            warm_rows = [{**r, "messages": [*system, *r["messages"]]} for r in warm_rows]
            loss, steps = sft_round(cfg, model, tok, info, warm_rows, cbs, out, round_=0, step_offset=step,
                                    tracker=run)
            step += steps
            warm_eval = heldout_eval(model, tok, eval_rows, max_new_tokens=cfg.max_new_tokens, system=system,
                                     batch_size=batch_size)
            warm = {"rows": len(warm_rows), "sft_steps": steps, "train_loss": loss,
                    "heldout_accuracy": warm_eval["accuracy"], "seconds": time.perf_counter() - t0}
            print(f"warm start on {len(warm_rows)} CoT rows: held-out accuracy {before['accuracy']:.2f} → "
                  f"{warm_eval['accuracy']:.2f}", flush=True)

        # 5. rounds: sample k per prompt → verify → keep → SFT → held-out accuracy ----------------------
        records, latest = [], before
        loop_start = time.perf_counter()
        for r in range(1, cfg.rounds + 1):
            t0 = time.perf_counter()
            prompts = round_prompts(train_rows, r, cfg.prompts_per_round, cfg.seed)
            with telemetry.phase("generation"):  # sampling and verifying
                samples = sample_round(model, tok, prompts, k=cfg.k, max_new_tokens=cfg.max_new_tokens,
                                       temperature=cfg.temperature, seed=cfg.seed + r, system=system,
                                       reward=reward, batch_size=batch_size)
            replies = [s["completion"][-1]["content"] for s in samples]
            telemetry.add_tokens(generated=sum(len(ids) for ids in tok(replies, add_special_tokens=False)
                                               ["input_ids"]) if replies else 0)
            telemetry.add_scores("reward", [s["reward"] for s in samples])
            kept = keep_verified(samples, keep_unfinished=keep_unfinished)
            write_jsonl(out / f"round_{r}.jsonl", [{**s, "round": r} for s in kept])
            verified = sum(s["verified"] for s in samples)
            record: dict[str, Any] = {
                "round": r, "prompts": len(prompts), "sampled": len(samples), "verified": verified,
                "verified_rate": verified / len(samples) if samples else 0.0,
                "verified_unfinished": sum(s["verified"] and not s["finished"] for s in samples),
                "kept": len(kept), "prompts_with_kept": len({s["prompt_index"] for s in kept})}
            loss, steps = sft_round(cfg, model, tok, info, kept, cbs, out, round_=r, step_offset=step,
                                    tracker=run) if kept else (None, 0)
            step += steps
            record.update(sft_steps=steps, train_loss=loss)
            if not steps:
                record["note"] = ("no verified sample to train on: SFT skipped, the model is unchanged this "
                                  "round")
                print(f"round {r}: no verified sample to train on; SFT skipped", flush=True)
            with telemetry.phase("eval"):
                latest = heldout_eval(model, tok, eval_rows, max_new_tokens=cfg.max_new_tokens, system=system,
                                      batch_size=batch_size)
            record.update(heldout_accuracy=latest["accuracy"], seconds=time.perf_counter() - t0)
            records.append(record)
            report(r, record)
            print(f"round {r}: verified {verified}/{len(samples)} ({record['verified_rate']:.0%}), "
                  f"kept {len(kept)}, held-out accuracy {latest['accuracy']:.2f} ({record['seconds']:.0f}s)",
                  flush=True)
            if run.over_budget():  # max_seconds / max_tokens, checked between rounds
                break
        telemetry.add_seconds("loop", time.perf_counter() - loop_start)

        # 6. save ---------------------------------------------------------------------------------------
        model.eval()
        adapter_dir = out / "adapter"
        model.save_pretrained(str(adapter_dir))
        tok.save_pretrained(str(adapter_dir))
        seconds = time.perf_counter() - start
        metrics = {"before": {"heldout_accuracy": before["accuracy"]},
                   "after": {"heldout_accuracy": latest["accuracy"]}, "rounds": records, "warm_start": warm,
                   "sft_steps_total": step, "kept_total": sum(rec["kept"] for rec in records),
                   "seconds": seconds, **info}
        cbs.on_end({"global_step": step, "before": before["accuracy"], "after": latest["accuracy"],
                    "seconds": seconds})
        held_samples = [{"prompt": b["prompt"], "answer": b["answer"], "before": b["reply"],
                         "after": a["reply"], "correct_before": b["correct"], "correct_after": a["correct"]}
                        for b, a in zip(before["samples"], latest["samples"])]
        config = {**cfg.to_dict(), "system_prompt": system_prompt, "warm_start": warm_start,
                  "keep_unfinished": keep_unfinished}
        result = RunResult("rejection_sampling", out, metrics, config, log_path=log_path,
                           adapter_dir=adapter_dir, model=model, tokenizer=tok, samples=held_samples)
        return run.complete(result, outputs={"adapter": adapter_dir})


def _check(cfg: ReasoningConfig, warm_start: str) -> None:
    for name in ("prompts_per_round", "k", "sft_steps", "batch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise ConfigError(name, f"must be at least 1, got {getattr(cfg, name)}", config="ReasoningConfig")
    for name in ("rounds", "n_eval"):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, f"must be 0 or more, got {getattr(cfg, name)}", config="ReasoningConfig")
    if cfg.temperature <= 0:
        raise ConfigError("temperature", f"sampling needs a temperature above 0, got {cfg.temperature}",
                          config="ReasoningConfig")
    if warm_start not in WARM_STARTS:
        raise ConfigError("warm_start", f"{warm_start!r} is not one of {', '.join(map(repr, WARM_STARTS))}")


def sft_round(cfg: ReasoningConfig, model, tok, info: dict, rows: list[dict], cbs: Callbacks,
              out: pathlib.Path, *, round_: int, step_offset: int, tracker=None) -> tuple[float | None, int]:
    """cfg.sft_steps steps of TRL's SFTTrainer (labkit.stages.sft.build_trainer: labkit's masks, loss on the
    assistant reply only) on this round's rows, training the LoRA model in place; (train loss, steps).
    A row whose reply the chat template cannot tokenise as a prefix-stable turn is logged and skipped;
    with no row left, nothing is trained: (None, 0). With the run's `tracker`, the tokens trained on are
    counted in its telemetry."""
    from datasets import Dataset

    from labkit.data.tokenize import sft_example
    from labkit.stages.sft import build_trainer

    # The SFT stage's trainer settings, with this loop's budget: a constant learning rate, because each round
    # is a short continuation of the same run rather than a run of its own to anneal.
    sft_cfg = SFTConfig(model=cfg.model, max_steps=cfg.sft_steps, batch_size=cfg.batch_size,
                        learning_rate=cfg.learning_rate, lr_scheduler="constant", warmup_ratio=0.0,
                        lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype, device=cfg.device,
                        seed=cfg.seed + round_, output_dir=str(out / "trainer"), n_eval=0)
    examples = []
    for i, row in enumerate(rows):
        columns = ("messages",) if "messages" in row else ("prompt", "completion")
        try:
            examples.append(sft_example(tok, {c: row[c] for c in columns}, loss_on="assistant",
                                        source=f"round {round_} rows", index=i))
        except DataError as exc:  # sampled text the chat template cannot round-trip: skip it, do not stop
            log.warning("round %d: not training on row %d: %s", round_, i, exc)
    if not examples:
        return None, 0
    dataset = Dataset.from_list(examples)
    # Each round's trainer counts steps from 0; callbacks see them counted across rounds.
    steps_cbs = Callbacks([_RoundSteps(cb, round_, step_offset) for cb in cbs])
    trainer = build_trainer(sft_cfg, model, tok, info, dataset, None, steps_cbs, out / "trainer")
    if tracker is not None:
        from labkit.runs.trainer_adapter import instrument

        instrument(trainer, tracker, budget=False)
    output = trainer.train()
    model.eval()
    return float(output.training_loss), int(output.global_step)


class _RoundSteps:
    """Passes a round's SFT step metrics on with the step shifted past earlier rounds and the round added;
    the trainer's own start and end are per round, so they are not passed on (the loop sends its own)."""

    def __init__(self, callback, round_: int, offset: int):
        self.callback, self.round, self.offset = callback, round_, offset

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        hook = getattr(self.callback, "on_step", None)
        if callable(hook):
            hook(step + self.offset, {**metrics, "round": float(self.round)})


rejection_sampling = train  # the name notebooks and the README used before the loop moved to labkit.stages
