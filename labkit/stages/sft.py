"""Stage: supervised fine-tuning — full, LoRA or QLoRA — on TRL's SFTTrainer, with labkit's data checks.

    result = train(SFTConfig.from_preset("cpu"), callbacks=[LiveDashboard()])

Sections: 1 setup · 2 data · 3 model · 4 baseline eval · 5 trainer · 6 eval · 7 save.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import time

from labkit.config import SFTConfig
from labkit.errors import ConfigError
from labkit.runs.callbacks import Callbacks, JsonlLogger
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter

log = logging.getLogger(__name__)


def train(cfg: SFTConfig, callbacks=()) -> RunResult:
    from transformers import PrinterCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from labkit.data.samples import SAMPLES, SAMPLES_DIR
    from labkit.data.tokenize import sft_dataset
    from labkit.eval.probes import forgetting_probe, format_eval
    from labkit.models import adapters  # first: it quiets bitsandbytes before TRL imports it
    from labkit.models.loading import load_tokenizer

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()
    checkpoint = get_last_checkpoint(str(out)) if cfg.resume and out.is_dir() else None
    if cfg.resume and checkpoint is None:
        raise ConfigError("resume", f"no checkpoint to resume from in {out}", config="SFTConfig")

    # 2. data: everything is validated (fields, templates, lengths) before a model is loaded -----
    from labkit.data.io import load_rows

    tok = load_tokenizer(cfg.model)
    path = SAMPLES_DIR / f"{cfg.data}.jsonl" if f"{cfg.data}.jsonl" in {s.name for s in SAMPLES} \
        else pathlib.Path(cfg.data)
    rows = load_rows(path, tokenizer=tok, max_length=cfg.max_length)
    train_rows, eval_rows = _split(rows, cfg, str(path))
    train_ds = sft_dataset(tok, train_rows, loss_on=cfg.loss_on, source=str(path))
    eval_rows = eval_rows[: cfg.n_eval]
    eval_ds = sft_dataset(tok, eval_rows, loss_on=cfg.loss_on, source=str(path)) if eval_rows else None
    generation_eval = bool(eval_rows) and "answer" in eval_rows[0] and "messages" in eval_rows[0]

    # 3. model ----------------------------------------------------------------------------------
    model, tok, info = adapters.load_for_training(
        cfg.model, method=cfg.method, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, targets=cfg.target_modules, dtype=cfg.dtype, device=cfg.device,
        backend=cfg.backend, max_length=cfg.max_length, gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed)
    print(f"SFT {cfg.method} via {info['backend']} ({info['backend_reason']}); {info['trainable_params']:,} of "
          f"{info['total_params']:,} parameters trainable; compute dtype {info['compute_dtype']}", flush=True)

    # 4. baseline eval ----------------------------------------------------------------------------
    model.eval()
    before = {"probe_loss": forgetting_probe(model, tok)["probe_loss"]}
    if generation_eval:
        before.update(_scores(format_eval(model, tok, eval_rows, max_new_tokens=cfg.eval_max_new_tokens)))

    # 5. trainer ------------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    cbs = Callbacks([JsonlLogger(log_path, append=checkpoint is not None), *Callbacks(callbacks)])
    bf16 = info["compute_dtype"] == "bfloat16"
    args = TRLSFTConfig(
        output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, bf16=bf16, fp16=info["compute_dtype"] == "float16",
        activation_checkpointing=cfg.gradient_checkpointing, logging_steps=1, report_to="none",
        eval_strategy="steps" if cfg.eval_every and eval_ds is not None else "no",
        eval_steps=cfg.eval_every or None, save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500, seed=cfg.seed, data_seed=cfg.seed, use_cpu=info["device"] == "cpu",
        dataloader_num_workers=0, padding_free=cfg.padding_free and not cfg.packing, packing=cfg.packing,
        # Lengths were validated above; TRL's own truncation would only hide a bad row.
        max_length=cfg.max_length if cfg.packing else None, completion_only_loss=False,
        # A labkit dashboard brings its own progress bar; without one, keep the trainer's.
        disable_tqdm=len(cbs) > 1,
    )
    with _quiet_datasets():
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tok, callbacks=[TrainerCallbackAdapter(cbs)])
    trainer.remove_callback(PrinterCallback)  # metrics go to the JSONL log and dashboards instead
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - start

    # 6. eval ---------------------------------------------------------------------------------------
    model.eval()
    after = {"probe_loss": forgetting_probe(model, tok)["probe_loss"]}
    samples = []
    if generation_eval:
        scored = format_eval(model, tok, eval_rows, max_new_tokens=cfg.eval_max_new_tokens)
        after.update(_scores(scored))
        samples = scored["samples"]
    if eval_ds is not None:
        after["eval_loss"] = trainer.evaluate()["eval_loss"]

    # 7. save ---------------------------------------------------------------------------------------
    save_dir = out / ("model" if cfg.method == "full" else "adapter")
    trainer.save_model(str(save_dir))
    tok.save_pretrained(str(save_dir))
    tokens = int(trainer.state.num_input_tokens_seen or 0) or _count_tokens(train_ds, output.global_step, cfg)
    metrics = {"before": before, "after": after, "train_loss": output.training_loss,
               "steps": output.global_step, "train_seconds": train_seconds,
               "tokens_per_s": tokens / train_seconds if train_seconds else 0.0, **info}
    result = RunResult("sft", out, metrics, cfg.to_dict(), log_path=log_path,
                       adapter_dir=save_dir if cfg.method != "full" else None, model=model, tokenizer=tok,
                       samples=samples)
    result.save()
    return result


@contextlib.contextmanager
def _quiet_datasets():
    """No per-map progress bars from `datasets` while TRL prepares the (already small) data."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _split(rows, cfg: SFTConfig, source: str) -> tuple[list[dict], list[dict]]:
    """Train and held-out rows by the `split` column; without one, everything trains and nothing is held out."""
    rows = [dict(r) for r in rows]
    if "split" not in rows[0]:
        if cfg.train_split or cfg.eval_split:
            log.info("%s has no split column: training on every row, no held-out eval", source)
        return rows, []
    train = [r for r in rows if not cfg.train_split or r["split"] == cfg.train_split]
    held = [r for r in rows if cfg.eval_split and r["split"] == cfg.eval_split]
    if not train:
        raise ConfigError("train_split", f"no row of {source} has split '{cfg.train_split}'", config="SFTConfig")
    return train, held


def _scores(evaluation: dict) -> dict:
    return {k: v for k, v in evaluation.items() if k != "samples"}


def _count_tokens(ds, steps: int, cfg: SFTConfig) -> int:
    """Tokens the optimizer saw, when the trainer did not count them (rows cycle through the epoch)."""
    lengths = [len(x) for x in ds["input_ids"]]
    n = steps * cfg.batch_size * cfg.grad_accum
    return sum(lengths[i % len(lengths)] for i in range(n))

