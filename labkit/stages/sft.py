"""Stage: supervised fine-tuning — full, LoRA or QLoRA — on TRL's SFTTrainer, with labkit's data checks.

    result = train(SFTConfig.from_preset("cpu"), callbacks=[LiveDashboard()])

Sections: 1 setup · 2 data · 3 model · 4 baseline eval · 5 trainer · 6 eval · 7 save.
"""

from __future__ import annotations

import logging
import pathlib
import time

import torch

from labkit.config import SFTConfig
from labkit.errors import ConfigError
from labkit.models.logprobs import IGNORE_INDEX, token_logprobs
from labkit.quiet import quiet_progress
from labkit.runs.callbacks import Callbacks
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter
from labkit.stages.common import (
    data_path,
    run_callbacks,
    save_pretrained,
    saved_model,
    shows_progress,
    split_rows,
    track,
    trainer_args,
)

log = logging.getLogger(__name__)


def train(cfg: SFTConfig, callbacks=(), *, force: bool = False) -> RunResult:
    """Supervised fine-tuning of cfg.model on conversations: full, LoRA or QLoRA, on TRL's SFTTrainer.

    Args:
        cfg: an SFTConfig (`SFTConfig.from_preset("cpu", method="lora")`): data, method, LoRA rank, steps,
            batch, learning rate, which tokens carry the loss (`loss_on`), checkpoints, budgets, resume.
        callbacks: labkit callbacks (a LiveDashboard, an InTrainingEval…) that receive every step and eval.
        force: run again even when this manifest already finished in cfg.output_dir (by default that is a
            no-op returning the stored result).
    Returns:
        a RunResult whose metrics hold `before` / `after` (held-out format and answer accuracy, the
        forgetting probe's loss, eval loss), train loss, steps, tokens/s and the run's `telemetry`;
        `samples` holds held-out replies before and after; the adapter (or full model) is saved under
        cfg.output_dir, beside manifest.json, status.json, metrics.jsonl and checkpoints/.
    Raises:
        DataError naming the file, row and field (a missing turn, a reply the template cannot mask, a row
        over max_length) and ConfigError (e.g. resume without a checkpoint), before any model is loaded.

    Example:
        result = train(SFTConfig.from_preset("cpu-smoke"))
        result.metrics["after"]["format_accuracy"], result.adapter_dir
    """
    from transformers import set_seed

    from labkit.data.io import load_rows
    from labkit.data.tokenize import sft_dataset
    from labkit.metrics.probes import forgetting_probe, format_eval
    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.runs.tracking import last_checkpoint
    from labkit.runs.trainer_adapter import instrument

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()
    if cfg.resume and last_checkpoint(out / "checkpoints") is None:
        raise ConfigError("resume", f"no checkpoint to resume from in {out / 'checkpoints'}",
                          config="SFTConfig")

    # 2. data: everything is validated (fields, templates, lengths) before a model is loaded -----
    tok = load_tokenizer(cfg.model)
    path = data_path(cfg.data)
    rows = load_rows(path, tokenizer=tok, max_length=cfg.max_length)
    train_rows, eval_rows = split_rows(rows, cfg.train_split, cfg.eval_split, str(path), "SFTConfig")
    train_ds = sft_dataset(tok, train_rows, loss_on=cfg.loss_on, source=str(path))
    eval_rows = eval_rows[: cfg.n_eval]
    eval_ds = sft_dataset(tok, eval_rows, loss_on=cfg.loss_on, source=str(path)) if eval_rows else None
    generation_eval = bool(eval_rows) and "answer" in eval_rows[0] and "messages" in eval_rows[0]

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track("sft", cfg, data=[path], force=force)
    if run.skipped:
        return run.stored_result(saved_model(cfg, out))
    with run:  # an exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised
        # 3. model ------------------------------------------------------------------------------------
        model, tok, info = adapters.load_for_training(
            cfg.model, method=cfg.method, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout, targets=cfg.target_modules, dtype=cfg.dtype, device=cfg.device,
            backend=cfg.backend, max_length=cfg.max_length, gradient_checkpointing=cfg.gradient_checkpointing,
            seed=cfg.seed, kernels=cfg.kernels)
        print(f"SFT {cfg.method} via {info['backend']} ({info['backend_reason']}); "
              f"{info['trainable_params']:,} of {info['total_params']:,} parameters trainable; compute dtype "
              f"{info['compute_dtype']}"
              + (f"; labkit.kernels patched {info['kernels']}" if "kernels" in info else ""), flush=True)

        # 4. baseline eval ----------------------------------------------------------------------------
        model.eval()
        probe_before = forgetting_probe(model, tok)
        before, scored_before = {"probe_loss": probe_before["probe_loss"]}, None
        if generation_eval:
            scored_before = format_eval(model, tok, eval_rows, max_new_tokens=cfg.eval_max_new_tokens)
            before.update(_scores(scored_before))

        # 5. trainer: checkpoints in checkpoints/, resumed from the last one when the run continues -----
        checkpoint = run.resume_from
        cbs, log_path = run_callbacks(out, callbacks, append=checkpoint is not None, title="SFT",
                                      budget_s=cfg.max_seconds)
        trainer = build_trainer(cfg, model, tok, info, train_ds, eval_ds, cbs, run.dir.checkpoints_dir)
        instrument(trainer, run)  # budget ceilings, tokens trained
        start = time.perf_counter()
        with run.telemetry.phase("loop"):
            output = trainer.train(resume_from_checkpoint=checkpoint)
        train_seconds = time.perf_counter() - start

        # 6. eval ---------------------------------------------------------------------------------------
        model.eval()
        probe_after = forgetting_probe(model, tok)
        after, samples = {"probe_loss": probe_after["probe_loss"]}, []
        if generation_eval:
            scored = format_eval(model, tok, eval_rows, max_new_tokens=cfg.eval_max_new_tokens)
            after.update(_scores(scored))
            samples = [{"prompt": a["prompt"], "target": a["target"], "before": b["reply"],
                        "after": a["reply"], "format_ok": a["format_ok"], "correct": a["correct"]}
                       for b, a in zip(scored_before["samples"], scored["samples"])]
        if eval_ds is not None:
            after["eval_loss"] = trainer.evaluate()["eval_loss"]

        # 7. save ---------------------------------------------------------------------------------------
        save_dir = out / ("model" if cfg.method == "full" else "adapter")
        trainer.save_model(str(save_dir))  # the trainer writes from the main process only
        save_pretrained(save_dir, tok)
        tokens = trained_tokens(trainer, since_step=int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0)
        probe = [{"prompt": b["prompt"], "before": b["loss"], "after": a["loss"]}
                 for b, a in zip(probe_before["per_prompt"], probe_after["per_prompt"])]
        metrics = {"before": before, "after": after, "probe_per_prompt": probe,
                   # a resumed run's trainer averages only the steps it ran itself: the log has them all
                   "train_loss": logged_train_loss(log_path) if checkpoint else output.training_loss,
                   "steps": output.global_step, "train_seconds": train_seconds,
                   "tokens_per_s": tokens / train_seconds if train_seconds else 0.0, **info}
        result = RunResult("sft", out, metrics, cfg.to_dict(), log_path=log_path,
                           adapter_dir=save_dir if cfg.method != "full" else None, model=model, tokenizer=tok,
                           samples=samples)
        return run.complete(result, outputs={"model" if cfg.method == "full" else "adapter": save_dir})


def build_trainer(cfg: SFTConfig, model, tok, info: dict, train_ds, eval_ds, callbacks: Callbacks,
                  out: pathlib.Path):
    """TRL's SFTTrainer with labkit's settings: padding-free batches, labkit's own masks and length checks,
    no activation checkpointing on small models, bf16 where the hardware runs it. bench/sft_throughput.py
    measures this against TRL's defaults."""
    from transformers import PrinterCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    args = TRLSFTConfig(
        **trainer_args(cfg, info, out, quiet=shows_progress(callbacks)),
        weight_decay=cfg.weight_decay,
        eval_strategy="steps" if cfg.eval_every and eval_ds is not None else "no",
        eval_steps=cfg.eval_every or None, padding_free=cfg.padding_free and not cfg.packing,
        packing=cfg.packing,
        # Lengths were validated up front; TRL's own truncation would only hide a bad row.
        max_length=cfg.max_length if cfg.packing else None, completion_only_loss=False,
    )
    with quiet_progress():
        trainer = _compact_loss_trainer(SFTTrainer)(
            model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tok,
            callbacks=[TrainerCallbackAdapter(callbacks)])
    trainer.remove_callback(PrinterCallback)  # metrics go to the JSONL log and dashboards instead
    return trainer


def _compact_loss_trainer(base):
    """SFTTrainer whose training loss projects only the labelled positions through the LM head.

    The LM head (vocab 49k × hidden) is a fifth of SmolLM2's compute, and most positions are prompt
    tokens whose logits the loss never uses. TRL skips them only on Triton devices; this does it on
    every device for padding-free batches (one row) by asking the model for the kept positions'
    logits (`logits_to_keep` takes an index tensor), then applies labkit's token log-probs. Padded
    batches and evaluation fall back to TRL's own computation.
    """

    class CompactLossSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            if not model.training or return_outputs or labels is None or labels.shape[0] != 1:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # [K] positions whose next token counts
            keep = (labels[0, 1:] != IGNORE_INDEX).nonzero().squeeze(-1)
            targets = labels[0, keep + 1]                                   # [K]
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            logits = model(**forward, use_cache=False, logits_to_keep=keep).logits[0]  # [K, V]
            lp = token_logprobs(logits[None], targets[None])[0]             # [K]
            n = keep.numel() if num_items_in_batch is None else num_items_in_batch
            loss = -lp.sum() / torch.as_tensor(n, device=lp.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as TRL does: DDP averages gradients
            with torch.no_grad():  # the metrics TRL logs, from the kept logits only
                k = max(keep.numel(), 1)
                probs = logits.float().softmax(-1)
                self._metrics["train"]["entropy"].append(
                    float(-(probs * probs.clamp_min(1e-30).log()).sum() / k))
                self._metrics["train"]["mean_token_accuracy"].append(
                    float((logits.argmax(-1) == targets).sum() / k))
                self._total_train_tokens += int(forward["position_ids"].shape[1]) \
                    if "position_ids" in forward else int(forward["attention_mask"].sum())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompactLossSFTTrainer


def _scores(evaluation: dict) -> dict:
    return {k: v for k, v in evaluation.items() if k != "samples"}


def logged_train_loss(log_path: pathlib.Path) -> float:
    """The mean training loss over every step in a run's metrics log (a step logged twice, before and after
    a resume, counts once: its last value)."""
    from labkit.runs.callbacks import read_jsonl

    losses = {e["step"]: e["loss"] for e in read_jsonl(log_path) if e.get("event") == "step" and "loss" in e}
    return sum(losses.values()) / len(losses) if losses else float("nan")


def trained_tokens(trainer, since_step: int = 0) -> int:
    """Tokens trained on after `since_step` (the step a resumed run started from). TRL logs a cumulative
    `num_tokens` (pads excluded) with every training log."""
    counts = [(e["step"], e["num_tokens"])
              for e in trainer.state.log_history if "num_tokens" in e and "loss" in e]
    if not counts:
        return 0
    earlier = [n for step, n in counts if step <= since_step]
    return int(counts[-1][1] - (earlier[-1] if earlier else 0))
