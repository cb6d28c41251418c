"""What every training stage does the same way: find the data, split it, fill TRL's shared trainer args, and
open the run's callbacks and metrics log."""

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
    (TRL configs extend them)."""
    return dict(
        output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=warmup_steps(cfg),
        bf16=info["compute_dtype"] == "bfloat16", fp16=info["compute_dtype"] == "float16", logging_steps=1,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=info["device"] == "cpu",
        dataloader_num_workers=0,
        # A labkit dashboard brings its own progress bar; without one, keep the trainer's.
        disable_tqdm=quiet,
    )


def run_callbacks(out: pathlib.Path, callbacks, *evals,
                  append: bool = False) -> tuple[Callbacks, pathlib.Path]:
    """The run's callbacks: the JSONL metrics log at out/metrics.jsonl, the caller's callbacks, then `evals`
    (PeriodicEvals, None skipped: last, so a step is logged before the eval it triggers). Creates `out`;
    returns (callbacks, log path)."""
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    evals = tuple(e for e in evals if e is not None)
    return Callbacks([JsonlLogger(log_path, append=append), *Callbacks(callbacks), *evals]), log_path


def held_out(measure, cfg, before: dict, model, tok, rows: list[dict]):
    """The stage's held-out PeriodicEval (every cfg.eval_every steps and at the end), or None without rows."""
    from labkit.metrics.periodic import PeriodicEval

    return PeriodicEval(measure, cfg.eval_every, before=before, model=model, tokenizer=tok) if rows else None


def timed(fn) -> tuple[Any, float]:
    """(fn(), its wall-clock seconds)."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def shows_progress(callbacks: Callbacks) -> bool:
    """Whether a caller's callback (a dashboard, a printer) is attached: it shows the run's progress, so the
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
