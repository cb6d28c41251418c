"""What every training stage does the same way: find the data, split it, fill TRL's shared trainer args, and
measure held-out metrics from inside a trainer's loop."""

from __future__ import annotations

import logging
import pathlib
from typing import Any

from labkit.errors import ConfigError
from labkit.runs.callbacks import Callbacks

log = logging.getLogger(__name__)


def data_path(name: str) -> pathlib.Path:
    """A data_samples name ("preference_pairs") or a path to a JSONL file."""
    from labkit.data.samples import SAMPLES, SAMPLES_DIR

    if f"{name}.jsonl" in {s.name for s in SAMPLES}:
        return SAMPLES_DIR / f"{name}.jsonl"
    return pathlib.Path(name)


def split_rows(rows, train_split: str, eval_split: str, source: str, config: str) -> tuple[list[dict], list[dict]]:
    """Train and held-out rows by the `split` column; without one, everything trains and nothing is held out."""
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


def trainer_args(cfg, info: dict, out: pathlib.Path, *, quiet: bool) -> dict[str, Any]:
    """transformers.TrainingArguments fields every labkit stage sets the same way (TRL configs extend them)."""
    return dict(
        output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        bf16=info["compute_dtype"] == "bfloat16", fp16=info["compute_dtype"] == "float16", logging_steps=1,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=info["device"] == "cpu",
        dataloader_num_workers=0,
        # A labkit dashboard brings its own progress bar; without one, keep the trainer's.
        disable_tqdm=quiet,
    )


class HeldOutProbe:
    """A TrainerCallback that runs `measure(step)` every `every` steps and at the last step, and sends the
    result to labkit callbacks as `heldout/…` evals; `latest` keeps (step, metrics, scores) of the last one.

    Built lazily (`__new__` returns the transformers subclass) so importing this module does not import
    transformers.
    """

    def __new__(cls, every: int, measure, before: dict[str, float], callbacks: Callbacks):
        from transformers import TrainerCallback

        class _Probe(TrainerCallback):
            latest: tuple = (None, {}, [])

            def on_train_begin(self, args, state, control, **kwargs):
                if before:  # the step-0 point of every held-out curve (after the dashboard has reset)
                    callbacks.on_eval(0, {f"heldout/{k}": v for k, v in before.items()})

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step = state.global_step
                if not before or not (every and step % every == 0 or step == state.max_steps):
                    return
                training = model.training
                model.eval()
                metrics, scores = measure(step)
                model.train(training)
                self.latest = (step, metrics, scores)
                callbacks.on_eval(step, {f"heldout/{k}": v for k, v in metrics.items()})

        return _Probe()
