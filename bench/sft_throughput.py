"""SFT throughput: labkit's SFT path vs plain TRL SFTTrainer + PEFT with TRL's default settings.

Both train the same LoRA (r=16, alpha=32, all linear layers) on the embedded model over the same
pre-tokenised rows (labkit's assistant-only masks), same seed, batch size, learning rate and steps,
so they optimise the same objective; only the trainer settings differ. TRL's defaults turn on
activation checkpointing and bf16 autocast over fp32 weights and pad every batch; labkit trains
padding-free, without checkpointing on a model this small, with bf16 base weights where the CPU has
native bf16. The runs alternate in one process. Tokens/s counts non-pad tokens; held-out loss (same
function for both) shows the speed is not bought with a worse model.

    .venv/bin/python bench/sft_throughput.py [--steps 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

import torch

from labkit.config import SFTConfig
from labkit.data.samples import load_sample
from labkit.data.tokenize import sft_dataset
from labkit.losses.sft import sft_loss
from labkit.models.adapters import load_for_training, lora_config
from labkit.models.loading import ensure_embedded_cache, load_tokenizer
from labkit.quiet import quiet_progress
from labkit.runs.callbacks import Callbacks
from labkit.stages.sft import build_trainer, trained_tokens


def heldout_loss(model, tok, rows) -> float:
    """Mean assistant-token loss on held-out rows, in fp32 (the same yardstick for both runs)."""
    ds = sft_dataset(tok, rows)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for ids, mask in zip(ds["input_ids"], ds["assistant_masks"]):
            x = torch.tensor([ids])
            labels = x.masked_fill(torch.tensor([mask]) == 0, -100)
            loss, m = sft_loss(model(x).logits.float(), labels)
            total, n = total + loss.item() * m["nll_tokens"], n + m["nll_tokens"]
    return total / n


def run_labkit(cfg: SFTConfig, train_ds, out: str):
    model, tok, info = load_for_training(cfg.model, method="lora", lora_r=cfg.lora_r,
                                         lora_alpha=cfg.lora_alpha,
                                         dtype=cfg.dtype, seed=cfg.seed)
    trainer = build_trainer(cfg, model, tok, info, train_ds, None, Callbacks(), out)
    return model, tok, trainer


def run_trl_defaults(cfg: SFTConfig, train_ds, out: str):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    path = ensure_embedded_cache()
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(cfg.seed)
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(path)
    model = get_peft_model(model, lora_config(cfg.lora_r, cfg.lora_alpha, 0.0, "all-linear"))
    # Only what must match for a fair comparison is set; everything else stays TRL's default.
    # use_cpu: without it TRL's default bf16=True refuses to start on a machine with no GPU.
    args = TRLSFTConfig(output_dir=out, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                        learning_rate=cfg.learning_rate, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
                        report_to="none", save_strategy="no", disable_tqdm=True,
                        use_cpu=not torch.cuda.is_available())
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    return model, tok, trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    cfg = SFTConfig.from_preset("cpu", max_steps=args.steps, batch_size=args.batch_size, warmup_ratio=0.0)
    tok = load_tokenizer(cfg.model)
    rows = load_sample("sft_format")
    train_ds = sft_dataset(tok, [r for r in rows if r["split"] == "train"])
    held = [r for r in rows if r["split"] == "heldout"][:24]
    results: dict[str, list[dict]] = {"labkit": [], "trl-defaults": []}
    for rep in range(args.repeats):
        order = ["labkit", "trl-defaults"] if rep % 2 == 0 else ["trl-defaults", "labkit"]
        for name in order:
            build = run_labkit if name == "labkit" else run_trl_defaults
            with tempfile.TemporaryDirectory() as out:
                model, tok, trainer = build(cfg, train_ds, out)
                start = time.perf_counter()
                trainer.train()
                seconds = time.perf_counter() - start
                tokens = trained_tokens(trainer)
                loss = heldout_loss(model, tok, held)
            results[name].append({"tokens_per_s": tokens / seconds, "seconds": seconds, "heldout_loss": loss})
            print(f"rep {rep} {name:>12}: {tokens} tokens in {seconds:6.1f} s = {tokens / seconds:6.1f} "
                  f"tokens/s, held-out loss {loss:.4f}", flush=True)
            del model, trainer
            gc.collect()
    med = {n: statistics.median(r["tokens_per_s"] for r in rs) for n, rs in results.items()}
    loss = {n: statistics.median(r["heldout_loss"] for r in rs) for n, rs in results.items()}
    for n in results:
        print(f"median {n:>12}: {med[n]:6.1f} tokens/s, held-out loss {loss[n]:.4f}")
    print(f"ratio labkit / trl-defaults tokens/s: {med['labkit'] / med['trl-defaults']:.2f}x")


if __name__ == "__main__":
    main()
