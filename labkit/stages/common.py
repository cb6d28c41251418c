"""What every training stage does the same way: find the data, split it, fill TRL's shared trainer args,
open the run's callbacks and metrics log, and track the run (manifest first, budgets, final status,
telemetry, lineage: `track`, built on labkit.runs.tracking)."""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

from labkit.errors import ConfigError
from labkit.runs.callbacks import Callbacks, JsonlLogger

log = logging.getLogger(__name__)


def data_path(name: str) -> pathlib.Path:
    """A data_samples name ("preference_pairs") or a path to a JSONL file."""
    from labkit.data.samples import SAMPLES, SAMPLES_DIR

    if f"{name}.jsonl" in {s.name for s in SAMPLES}:
        return SAMPLES_DIR / f"{name}.jsonl"
    return pathlib.Path(name)


def split_rows(rows, train_split: str, eval_split: str, source: str,
               config: str) -> tuple[list[dict], list[dict]]:
    """Train and held-out rows by the `split` column; without one,
    everything trains and nothing is held out."""
    rows = [dict(r) for r in rows]
    if "split" not in rows[0]:
        if train_split or eval_split:
            log.info("%s has no split column: training on every row, no held-out eval", source)
        return rows, []
    train = [r for r in rows if not train_split or r["split"] == train_split]
    held = [r for r in rows if eval_split and r["split"] == eval_split]
    if not train:
        raise ConfigError("train_split", f"no row of {source} has split '{train_split}'", config=config)
    return train, held


def warmup_steps(cfg, steps: int | None = None) -> int:
    """Whole warmup steps, rounded down: transformers rounds a ratio up, so a 2-step smoke run would spend its
    first step at learning rate 0 (and LoRA's A matrices, whose gradient needs a trained B, would never
    move)."""
    return int(cfg.warmup_ratio * (cfg.max_steps if steps is None else steps))


def trainer_args(cfg, info: dict, out: pathlib.Path, *, quiet: bool) -> dict[str, Any]:
    """transformers.TrainingArguments fields every labkit stage sets the same way
    (TRL configs extend them). `out` is where the trainer writes checkpoints (the run's checkpoints/),
    every cfg.save_every steps when the config has that field and it is not 0."""
    save_every = getattr(cfg, "save_every", 0)
    return dict(
        output_dir=str(out), save_strategy="steps" if save_every else "no", save_steps=save_every or 500,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=warmup_steps(cfg),
        bf16=info["compute_dtype"] == "bfloat16", fp16=info["compute_dtype"] == "float16", logging_steps=1,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=info["device"] == "cpu",
        dataloader_num_workers=0,
        # Under DDP: every trainable tensor (LoRA, heads) takes part in each forward, so skip the search for
        # unused ones (an extra pass over the graph, and a warning on every rank).
        ddp_find_unused_parameters=False,
        # Set under its current name: TRL's configs default the deprecated one (and to True for some).
        activation_checkpointing=getattr(cfg, "gradient_checkpointing", False),
        # A labkit dashboard or the console view brings its own progress bar; without one, keep the trainer's.
        disable_tqdm=quiet,
    )


def track(stage: str, cfg, *, data=(), rewards=(), force: bool = False, extra: dict[str, Any] | None = None):
    """Start tracking a stage's run in cfg.output_dir: manifest.json written (once) and status `running`
    before any model is loaded, the run and its inputs in the lineage store (labkit.runs.tracking).

    Call it after the data was validated (a bad row leaves no run folder behind). `data`: files the run
    reads; `rewards`: reward functions (or labkit names); `extra`: train() arguments beyond the config that
    change the computation (recorded in the manifest's config). Returns the RunTracker: `skipped` when this
    manifest already finished in that folder (unless `force`), `checkpoint` when resuming one that did not.
    Under `accelerate launch` only rank 0 writes; the other ranks follow its plan (labkit.runs.ranks).
    """
    from labkit.runs.manifest import build_manifest
    from labkit.runs.ranks import start_tracked

    manifest = build_manifest(stage, {**cfg.to_dict(), **(extra or {})}, preset=cfg.preset,
                              data=[p for p in data if p is not None], rewards=rewards)
    return start_tracked(pathlib.Path(cfg.output_dir).resolve(), manifest, force=force)


def single_process(stage: str) -> None:
    """ConfigError when launched as one of several processes: for stages whose loop is not data-parallel
    (each rank would run the whole stage on its own)."""
    from labkit.dist import world_size

    if world_size() > 1:
        raise ConfigError("processes", f"{stage} runs in one process only (its loop is not data-parallel), "
                          f"but this is one of {world_size()}; use grpo or rloo for multi-process RL")


def save_pretrained(path: pathlib.Path, *objects, **kwargs) -> None:
    """`obj.save_pretrained(path, **kwargs)` for each model or tokenizer, on the main process only (every
    rank of a multi-process run holds the same weights; one writes them)."""
    from labkit.dist import is_main

    if is_main():
        for obj in objects:
            obj.save_pretrained(str(path), **kwargs)


def saved_model(cfg, out: pathlib.Path, *, classifier: bool = False):
    """A loader for a finished run's model: `load() -> (model, tokenizer)` from out/model (full fine-tuning)
    or cfg.model plus the adapter in out/adapter, on cfg.device in cfg.dtype, in eval mode. `classifier` for
    the reward model (a one-output sequence classifier). QLoRA adapters load on an unquantized base."""

    def load():
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        from labkit.models.device import resolve_device, resolve_dtype
        from labkit.models.loading import resolve_model_path
        from labkit.quiet import quiet_progress

        full, adapter = out / "model", out / "adapter"
        tok = AutoTokenizer.from_pretrained(str(full if full.is_dir() else adapter))  # saved with the weights
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        dev = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, dev) if not full.is_dir() else torch.float32
        auto, kwargs = ((AutoModelForSequenceClassification, {"num_labels": 1}) if classifier
                        else (AutoModelForCausalLM, {}))
        with quiet_progress():
            model = auto.from_pretrained(str(full) if full.is_dir() else resolve_model_path(cfg.model),
                                         dtype=dtype, **kwargs)
            if classifier:
                model.config.pad_token_id = tok.pad_token_id
            if not full.is_dir():
                model = PeftModel.from_pretrained(model, str(adapter))
        return model.to(dev).eval(), tok

    return load


def run_callbacks(out: pathlib.Path, callbacks, *evals, append: bool = False, title: str = "",
                  budget_s: float | None = None) -> tuple[Callbacks, pathlib.Path]:
    """The run's callbacks: the JSONL metrics log at out/metrics.jsonl, the caller's callbacks, a console
    view when none of them shows progress (one bar whose total honours the `budget_s` wall-clock ceiling, a
    line per step; not under LABKIT_VERBOSE, which keeps the trainer's own bar), then `evals` (PeriodicEvals,
    None skipped: last, so a step is logged before the eval it triggers). Creates `out`; returns (callbacks,
    log path)."""
    from labkit.dist import is_main
    from labkit.quiet import verbose
    from labkit.runs.console import ConsoleProgress

    log_path = out / "metrics.jsonl"
    if not is_main():  # rank 0 logs, draws and evaluates; the other ranks of a multi-process run only train
        return Callbacks([]), log_path
    out.mkdir(parents=True, exist_ok=True)
    evals = tuple(e for e in evals if e is not None)
    user = Callbacks(callbacks)
    quiet = shows_progress(user) or verbose()
    console = () if quiet else (ConsoleProgress(title, budget_s=budget_s or None),)
    return Callbacks([JsonlLogger(log_path, append=append), *user, *console, *evals]), log_path


def held_out(measure, cfg, before: dict, model, tok, rows: list[dict]):
    """The stage's held-out PeriodicEval (every cfg.eval_every steps and at the end), or None without rows
    (and on ranks other than 0 of a multi-process run: rank 0 evaluates and reports)."""
    from labkit.dist import is_main
    from labkit.metrics.periodic import PeriodicEval

    if not rows or not is_main():
        return None
    return PeriodicEval(measure, cfg.eval_every, before=before, model=model, tokenizer=tok)


def timed(fn) -> tuple[Any, float]:
    """(fn(), its wall-clock seconds)."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def shows_progress(callbacks: Callbacks) -> bool:
    """Whether a callback that shows the run's progress (a dashboard, the console view) is attached, so the
    trainer's own bar stays off. The metrics log and held-out evals show nothing."""
    from labkit.metrics.periodic import PeriodicEval

    return any(not isinstance(getattr(cb, "callback", cb), (JsonlLogger, PeriodicEval)) for cb in callbacks)


def load_pairs(cfg, tok, config: str) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs) of cfg.data, validated as preference rows before any model loads;
    held-out pairs are cut to cfg.n_eval."""
    from labkit.data.io import load_rows
    from labkit.data.types import Kind

    path = data_path(cfg.data)
    rows = load_rows(path, kind=Kind.PREFERENCE, tokenizer=tok, max_length=cfg.max_length)
    if getattr(cfg, "kinds", ""):
        rows = keep_kinds(rows, cfg.kinds, str(path), config)
    train_rows, eval_rows = split_rows(rows, cfg.train_split, cfg.eval_split, str(path), config)
    return train_rows, eval_rows[: cfg.n_eval]


def keep_kinds(rows, kinds: str, source: str, config: str) -> list[dict]:
    """The rows whose `source_kind` is one of the comma-separated `kinds` (all rows when kinds is empty)."""
    rows = [dict(r) for r in rows]
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    if not wanted:
        return rows
    present = {r.get("source_kind") for r in rows}
    missing = [k for k in wanted if k not in present]
    if missing:
        raise ConfigError("kinds", f"{source} has no rows with source_kind {', '.join(missing)}; "
                          f"it has: {', '.join(sorted(map(str, present)))}", config=config)
    return [r for r in rows if r.get("source_kind") in wanted]
