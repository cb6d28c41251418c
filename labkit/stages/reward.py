"""Stage: a reward model — the LM with a scalar head, trained on preference pairs with TRL's RewardTrainer.

    result = train(RewardConfig.from_preset("cpu"))
    rewards = score(result.model, result.tokenizer, prompts, replies)

The loss is Bradley-Terry (labkit.losses.reward.bradley_terry_loss is the readable version). After
training labkit reports held-out pairwise accuracy, overall and per `source_kind`, and calibration:
how often a pair the model gives P(chosen wins) = σ(r_c - r_r) = p actually goes its way.
`length_bias=True` trains on pairs where padding wins, for the reward-hacking lab.

Sections: 1 setup · 2 data · 3 model · 4 baseline eval · 5 trainer · 6 eval · 7 save.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import torch

from labkit.config import RewardConfig
from labkit.metrics.reward_model import (  # noqa: F401 (score and ECE are used from here by notebooks)
    calibration,
    expected_calibration_error,
    pairwise_metrics,
    score,
    score_pairs,
)
from labkit.quiet import expected_load_report, quiet_progress
from labkit.runs.callbacks import Callbacks
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter
from labkit.stages.common import (
    data_path,
    held_out,
    load_pairs,
    run_callbacks,
    save_pretrained,
    saved_model,
    shows_progress,
    timed,
    track,
    trainer_args,
)


def train(cfg: RewardConfig, callbacks=(), *, force: bool = False) -> RunResult:
    """Train a reward model (the LM with a scalar head) on preference pairs with TRL's RewardTrainer.

    Args:
        cfg: a RewardConfig (`RewardConfig.from_preset("cpu")`); method "lora" (adapter + head) or "full";
            length_bias=True flips the padded pairs, for the reward-hacking lab.
        callbacks: labkit callbacks (a LiveDashboard…) that receive every step and eval.
        force: run again even when this manifest already finished in cfg.output_dir (else a no-op).
    Returns:
        a RunResult whose metrics hold `before` / `after` held-out pairwise accuracy (overall and per
        `source_kind`) and mean margin, the `calibration` table, train loss, steps and `telemetry` (with the
        held-out scores' statistics); `samples` holds each held-out pair's scores; the adapter (or model)
        is saved under cfg.output_dir.
    Raises:
        DataError / ConfigError naming the file, row and field, before any model is loaded.

    Example:
        result = train(RewardConfig.from_preset("cpu-smoke"))
        score(result.model, result.tokenizer, ["What is 2 + 3?"], ["#### 5"])
    """
    from transformers import set_seed

    from labkit.models.loading import load_tokenizer
    from labkit.runs.trainer_adapter import instrument

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()

    # 2. data: validated before a model is loaded --------------------------------------------------
    tok = load_tokenizer(cfg.model)
    train_rows, eval_rows = load_pairs(cfg, tok, "RewardConfig")
    if cfg.length_bias:
        train_rows = length_biased(train_rows)

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track("reward", cfg, data=[data_path(cfg.data)], force=force)
    if run.skipped:
        return run.stored_result(saved_model(cfg, out, classifier=True))
    with run:  # an exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised
        # 3. model ------------------------------------------------------------------------------------
        model, tok, info = load_reward_model(cfg)
        print(f"reward model: {cfg.model} + scalar head, {cfg.method}; {info['trainable_params']:,} of "
              f"{info['total_params']:,} parameters trainable; {len(train_rows)} training pairs"
              + (" (length-biased: padded replies win)" if cfg.length_bias else ""), flush=True)

        # 4. baseline: the freshly initialised head ranks pairs at about chance -------------------------
        model.eval()
        before = pairwise_metrics(score_pairs(model, tok, eval_rows)) if eval_rows else {}

        def measure(model, tok, step: int) -> tuple[dict[str, float], list[dict]]:
            scored = score_pairs(model, tok, eval_rows)
            return pairwise_metrics(scored), scored

        # 5. trainer ------------------------------------------------------------------------------------
        heldout = held_out(measure, cfg, before, model, tok, eval_rows)
        cbs, log_path = run_callbacks(out, callbacks, heldout, append=run.resuming, title="reward model",
                                      budget_s=cfg.max_seconds)
        trainer = instrument(build_trainer(cfg, model, tok, info, train_rows, cbs, run.dir.checkpoints_dir),
                             run)
        with run.telemetry.phase("loop"):
            output, train_seconds = timed(lambda: trainer.train(resume_from_checkpoint=run.resume_from))
        if heldout:
            run.telemetry.add_seconds("eval", heldout.seconds)

        # 6. eval: the held-out eval measured the last step when training ended --------------------------
        model.eval()
        _, after, scored = heldout.latest if heldout else (None, {}, [])
        run.telemetry.add_scores("reward_model", [s[k] for s in scored for k in ("chosen", "rejected")])

        # 7. save ---------------------------------------------------------------------------------------
        save_dir = out / ("model" if cfg.method == "full" else "adapter")
        save_pretrained(save_dir, model, tok)
        metrics = {"before": before, "after": after, "calibration": calibration(scored) if scored else [],
                   "train_loss": output.training_loss, "steps": output.global_step,
                   "train_seconds": train_seconds,
                   "pairs": len(train_rows), "length_bias": cfg.length_bias, **info}
        result = RunResult("reward", out, metrics, cfg.to_dict(), log_path=log_path,
                           adapter_dir=save_dir if cfg.method != "full" else None, model=model, tokenizer=tok,
                           samples=scored)
        return run.complete(result, outputs={"model" if cfg.method == "full" else "adapter": save_dir})


def length_biased(rows: Sequence[dict]) -> list[dict]:
    """The reward-hacking lab's training set: every `padded` pair flipped, so the long, padded reply wins.

    A stand-in for raters who reward length: the other pairs are untouched, so the labels are still mostly
    right, and the bias lives only in what separates padded from concise replies.
    """
    out = []
    for r in rows:
        r = dict(r)
        if r.get("source_kind") == "padded":
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
        out.append(r)
    return out


def load_reward_model(cfg: RewardConfig) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info): AutoModelForSequenceClassification with one output,
    LoRA unless method='full'."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from labkit.models.device import resolve_device, resolve_dtype
    from labkit.models.loading import ModelLoadError, load_tokenizer, resolve_model_path

    dev = resolve_device(cfg.device)
    compute_dtype = resolve_dtype(cfg.dtype, dev)
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)  # the score head is freshly initialised
    # The load report would list the new head as MISSING, in red, every time: check that it is the only
    # thing missing here instead.
    with quiet_progress(), expected_load_report():
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(cfg.model), num_labels=1, output_loading_info=True,
            dtype=torch.float32 if cfg.method == "full" else compute_dtype)
    missing = sorted(k for k in loading.get("missing_keys", ()) if not k.startswith("score."))
    if missing or loading.get("mismatched_keys"):
        raise ModelLoadError(f"{cfg.model}: as a reward model, weights besides the new score head did not "
                             f"load: {(missing or loading['mismatched_keys'])[:5]}")
    # The classifier reads the last non-pad token, so it has to know which token pads.
    model.config.pad_token_id = tok.pad_token_id
    model.to(dev)
    if cfg.method == "lora":
        # task_type SEQ_CLS keeps the new `score` head fully trainable (PEFT's modules_to_save).
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="SEQ_CLS"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"backend": "peft" if cfg.method == "lora" else "transformers", "device": str(dev),
            "compute_dtype": str(compute_dtype).replace("torch.", ""), "trainable_params": trainable,
            "total_params": total}
    return model, tok, info


def build_trainer(cfg: RewardConfig, model, tok, info: dict, train_rows: list[dict], callbacks: Callbacks,
                  out: pathlib.Path):
    """TRL's RewardTrainer on the training pairs, reporting to labkit's callbacks."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    args = TRLRewardConfig(**trainer_args(cfg, info, out, quiet=shows_progress(callbacks)),
                           max_length=cfg.max_length, center_rewards_coefficient=cfg.center_rewards or None)
    pairs = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train_rows])
    with quiet_progress():
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tok,
                                callbacks=[TrainerCallbackAdapter(callbacks)])
    trainer.remove_callback(PrinterCallback)
    return trainer
