"""Stage: preference optimisation — DPO, IPO, hinge, robust DPO, SimPO, ORPO and KTO behind one `train`.

    result = train(PreferenceConfig.from_preset("cpu", method="ipo"),
                   callbacks=[LiveDashboard(PREFERENCE_PANELS)])

Every method trains a LoRA adapter with TRL's trainer for it (DPOTrainer for the DPO family and IPO, the
experimental CPOTrainer for SimPO and ORPOTrainer for ORPO, KTOTrainer on the pairs split into unpaired
examples). The reference is the same network with the adapter switched off, so no second copy is loaded.
Before and after training labkit measures, on held-out pairs, how often the policy ranks chosen above
rejected, and KL(policy ‖ reference) on completions the policy samples.

Sections: 1 setup · 2 data · 3 model · 4 baseline eval · 5 trainer · 6 eval · 7 save.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from labkit.config import PreferenceConfig
from labkit.quiet import quiet_progress
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

# Which TRL trainer and loss each method runs on, and what it optimises (shown in notebooks and reports).
METHODS: dict[str, dict[str, str]] = {
    "dpo": {"trainer": "DPOTrainer", "loss": "sigmoid", "reference": "yes",
            "what": "-log σ(βΔ) on the summed log-ratio margin Δ"},
    "ipo": {"trainer": "DPOTrainer", "loss": "ipo", "reference": "yes",
            "what": "(Δ - 1/(2β))² on the per-token log-ratio margin: regresses to a fixed gap"},
    "hinge": {"trainer": "DPOTrainer", "loss": "hinge", "reference": "yes",
              "what": "max(0, 1 - βΔ): stops pushing once the margin clears 1/β"},
    "robust": {"trainer": "DPOTrainer", "loss": "robust", "reference": "yes",
               "what": "DPO debiased for a share ε of flipped labels"},
    "simpo": {"trainer": "CPOTrainer (trl.experimental)", "loss": "simpo", "reference": "no",
              "what": "-log σ(β(ā_w - ā_l) - γ) on per-token log-probs"},
    "orpo": {"trainer": "ORPOTrainer (trl.experimental)", "loss": "orpo", "reference": "no",
             "what": "SFT loss on chosen + β · odds-ratio term"},
    "kto": {"trainer": "KTOTrainer", "loss": "kto", "reference": "yes",
            "what": "unpaired: push desirable replies above, undesirable below a KL reference point"},
}


def train(cfg: PreferenceConfig, callbacks=(), *, force: bool = False) -> RunResult:
    """Train a LoRA adapter with the preference method cfg.method on preference pairs.

    Args:
        cfg: a PreferenceConfig (`PreferenceConfig.from_preset("cpu", method="ipo")`); cfg.method is one of
            METHODS (dpo, ipo, hinge, robust, simpo, orpo, kto).
        callbacks: labkit callbacks (a LiveDashboard, an InTrainingEval…) that receive every step and eval.
        force: run again even when this manifest already finished in cfg.output_dir (else a no-op).
    Returns:
        a RunResult whose metrics hold `before` and `after` (held-out preference accuracy, implicit-reward
        accuracy and KL to the reference: k3, never negative), train loss, steps and `telemetry`; `samples`
        holds each held-out pair's margin before and after; the adapter is saved under
        cfg.output_dir/adapter.
    Raises:
        DataError / ConfigError naming the file, row and field, before any model is loaded.

    Example:
        result = train(PreferenceConfig.from_preset("cpu-smoke", method="dpo"))
        result.metrics["after"]["preference_accuracy"], result.metrics["after"]["kl"]
    """
    from transformers import set_seed

    from labkit.metrics.kl import sampled_kl
    from labkit.metrics.preference import implicit_reward_accuracy, pair_logps, preference_accuracy
    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.runs.trainer_adapter import instrument

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()

    # 2. data: validated (fields, identical pairs, template, lengths) before a model is loaded ------
    tok = load_tokenizer(cfg.model)
    train_rows, eval_rows = load_pairs(cfg, tok, "PreferenceConfig")
    kl_prompts = [r["prompt"] for r in eval_rows[: cfg.kl_prompts]]

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track("preference", cfg, data=[data_path(cfg.data)], force=force)
    if run.skipped:
        return run.stored_result(saved_model(cfg, out))
    with run:  # an exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised
        # 3. model ------------------------------------------------------------------------------------
        model, tok, info = adapters.load_for_training(
            cfg.model, method="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype,
            device=cfg.device, max_length=cfg.max_length, seed=cfg.seed, kernels=cfg.kernels)
        print(f"{cfg.method.upper()} via {METHODS[cfg.method]['trainer']} on {len(train_rows)} pairs; "
              f"LoRA r={cfg.lora_r}, {info['trainable_params']:,} trainable; reference = the base with the "
              f"adapter off", flush=True)

        # 4. baseline eval: at step 0 the policy *is* the reference ------------------------------------
        model.eval()
        reference = pair_logps(model, tok, eval_rows) if eval_rows else []
        before = {**_accuracy_metrics(preference_accuracy(reference)), "kl": 0.0} if eval_rows else {}

        def measure(model, tok, step: int) -> tuple[dict[str, float], list[dict]]:
            """Held-out accuracy (vs the reference's scores) and sampled KL of the model as it is now."""
            scores = pair_logps(model, tok, eval_rows)
            metrics = _accuracy_metrics(preference_accuracy(scores))
            metrics["implicit_reward_accuracy"] = implicit_reward_accuracy(scores, reference)
            if kl_prompts:
                metrics.update(_kl(sampled_kl(model, tok, kl_prompts, n_samples=cfg.kl_samples,
                                              max_new_tokens=cfg.kl_max_new_tokens, seed=cfg.seed + step)))
            return metrics, scores

        # 5. trainer ------------------------------------------------------------------------------------
        heldout = held_out(measure, cfg, before, model, tok, eval_rows)
        cbs, log_path = run_callbacks(out, callbacks, heldout, append=run.resuming,
                                      title=cfg.method.upper(),
                                      budget_s=cfg.max_seconds)
        trainer = instrument(build_trainer(cfg, model, tok, info, train_rows, cbs, run.dir.checkpoints_dir),
                             run)
        with run.telemetry.phase("loop"):
            output, train_seconds = timed(lambda: trainer.train(resume_from_checkpoint=run.resume_from))
        if heldout:
            run.telemetry.add_seconds("eval", heldout.seconds)

        # 6. eval: the held-out eval measured the last step when training ended --------------------------
        model.eval()
        after, per_pair = {}, []
        if heldout:
            _, after, scores = heldout.latest
            per_pair = [{"prompt": r["prompt"][-1]["content"], "kind": s["kind"],
                         "margin_before": ref["chosen"] - ref["rejected"],
                         "margin_after": s["chosen"] - s["rejected"]}
                        for r, s, ref in zip(eval_rows, scores, reference)]
            run.telemetry.add_scores("margin", [p["margin_after"] for p in per_pair])

        # 7. save ---------------------------------------------------------------------------------------
        save_dir = out / "adapter"
        # TRL adds a frozen copy of the starting adapter ("ref") as the reference: save only the trained one.
        save_pretrained(save_dir, model, selected_adapters=["default"])
        save_pretrained(save_dir, tok)
        metrics = {"method": cfg.method, "beta": cfg.method_beta, "before": before, "after": after,
                   "train_loss": output.training_loss, "steps": output.global_step,
                   "train_seconds": train_seconds,
                   "pairs": len(train_rows), **info}
        result = RunResult("preference", out, metrics, cfg.to_dict(), log_path=log_path, adapter_dir=save_dir,
                           model=model, tokenizer=tok, samples=per_pair)
        return run.complete(result, outputs={"adapter": save_dir})


def _accuracy_metrics(acc: dict) -> dict[str, float]:
    flat = {"preference_accuracy": acc["accuracy"], "preference_accuracy_avg": acc["accuracy_avg"]}
    flat.update({f"accuracy/{k}": v for k, v in acc["by_kind"].items()})
    return flat


def _kl(est: dict) -> dict[str, float]:
    """The KL numbers a preference run reports: k3 (never negative) per completion and per token, and k1."""
    return {"kl": est["kl"], "kl_per_token": est["kl_per_token"], "kl_k1": est["kl_k1"]}


def precompute_pays(cfg: PreferenceConfig, n_train: int) -> bool:
    """Score the reference up front only when the run would otherwise score more pairs than the dataset holds.

    Up front costs one reference pass over every training pair; on the fly costs one per pair the run sees
    (max_steps × batch × accumulation), so a short run on a large set is cheaper on the fly.
    """
    seen = cfg.max_steps * cfg.batch_size * cfg.grad_accum
    return cfg.precompute_ref and seen > n_train


def trainer_config(cfg: PreferenceConfig, info: dict, out: pathlib.Path, *, quiet: bool, n_train: int):
    """The TRL config object for cfg.method, with labkit's shared settings."""
    precompute = precompute_pays(cfg, n_train)
    common: dict[str, Any] = {**trainer_args(cfg, info, out, quiet=quiet),
                              "beta": cfg.method_beta, "max_length": cfg.max_length}
    if cfg.method in ("dpo", "ipo", "hinge", "robust"):
        from trl import DPOConfig

        return DPOConfig(**common, loss_type=[METHODS[cfg.method]["loss"]],
                         precompute_ref_log_probs=precompute,
                         label_smoothing=cfg.label_smoothing if cfg.method == "robust" else 0.0)
    if cfg.method == "kto":
        from trl import KTOConfig

        return KTOConfig(**common, precompute_ref_log_probs=precompute)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if cfg.method == "simpo":
        from trl.experimental.cpo import CPOConfig

        # SimPO = CPO's trainer with its `simpo` loss and the behaviour-cloning term switched off.
        return CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=cfg.simpo_gamma)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common)


def build_trainer(cfg: PreferenceConfig, model, tok, info: dict, train_rows: list[dict], callbacks: Callbacks,
                  out: pathlib.Path):
    """TRL's trainer for cfg.method on the training pairs (unpaired for KTO)."""
    from datasets import Dataset
    from transformers import PrinterCallback

    args = trainer_config(cfg, info, out, quiet=shows_progress(callbacks), n_train=len(train_rows))
    pairs = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train_rows])
    kwargs = {"model": model, "args": args, "processing_class": tok,
              "callbacks": [TrainerCallbackAdapter(callbacks)]}
    with quiet_progress():
        if cfg.method in ("dpo", "ipo", "hinge", "robust"):
            from trl import DPOTrainer

            trainer = DPOTrainer(train_dataset=pairs, **kwargs)
        elif cfg.method == "kto":
            from trl import KTOTrainer
            from trl.data_utils import unpair_preference_dataset

            # KTO reads its data in order (each example's KL term pairs it with its batch neighbours), and
            # unpairing lists every chosen reply before every rejected one: shuffle,
            # or early batches are all "good".
            unpaired = unpair_preference_dataset(pairs).shuffle(seed=cfg.seed)
            trainer = KTOTrainer(train_dataset=unpaired, **kwargs)
        elif cfg.method == "simpo":
            from trl.experimental.cpo import CPOTrainer

            trainer = CPOTrainer(train_dataset=pairs, **kwargs)
        else:
            from trl.experimental.orpo import ORPOTrainer

            trainer = ORPOTrainer(train_dataset=pairs, **kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer
