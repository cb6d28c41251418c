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

import math
import pathlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from labkit.config import RewardConfig
from labkit.quiet import quiet_progress
from labkit.runs.callbacks import Callbacks, JsonlLogger
from labkit.runs.result import RunResult
from labkit.runs.trainer_adapter import TrainerCallbackAdapter
from labkit.stages.common import data_path, split_rows, trainer_args


def train(cfg: RewardConfig, callbacks=()) -> RunResult:
    from transformers import set_seed

    from labkit.data.io import load_rows
    from labkit.data.types import Kind
    from labkit.models.loading import load_tokenizer

    # 1. setup ------------------------------------------------------------------------------------
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()

    # 2. data: validated before a model is loaded --------------------------------------------------
    tok = load_tokenizer(cfg.model)
    path = data_path(cfg.data)
    rows = load_rows(path, kind=Kind.PREFERENCE, tokenizer=tok, max_length=cfg.max_length)
    train_rows, eval_rows = split_rows(rows, cfg.train_split, cfg.eval_split, str(path), "RewardConfig")
    eval_rows = eval_rows[: cfg.n_eval]
    if cfg.length_bias:
        train_rows = length_biased(train_rows)

    # 3. model ------------------------------------------------------------------------------------
    model, tok, info = load_reward_model(cfg)
    print(f"reward model: {cfg.model} + scalar head, {cfg.method}; {info['trainable_params']:,} of "
          f"{info['total_params']:,} parameters trainable; {len(train_rows)} training pairs"
          + (" (length-biased: padded replies win)" if cfg.length_bias else ""), flush=True)

    # 4. baseline: the freshly initialised head ranks pairs at about chance -------------------------
    model.eval()
    before = pairwise_metrics(score_pairs(model, tok, eval_rows)) if eval_rows else {}

    # 5. trainer ------------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    cbs = Callbacks([JsonlLogger(log_path), *Callbacks(callbacks)])
    trainer = build_trainer(cfg, model, tok, info, train_rows, cbs, out,
                            extra_callbacks=[_probe(cfg, tok, eval_rows, before, cbs)])
    start = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - start

    # 6. eval ---------------------------------------------------------------------------------------
    model.eval()
    scored = score_pairs(model, tok, eval_rows) if eval_rows else []
    after = pairwise_metrics(scored) if scored else {}

    # 7. save ---------------------------------------------------------------------------------------
    save_dir = out / ("model" if cfg.method == "full" else "adapter")
    model.save_pretrained(str(save_dir))
    tok.save_pretrained(str(save_dir))
    metrics = {"before": before, "after": after, "calibration": calibration(scored) if scored else [],
               "train_loss": output.training_loss, "steps": output.global_step, "train_seconds": train_seconds,
               "pairs": len(train_rows), "length_bias": cfg.length_bias, **info}
    result = RunResult("reward", out, metrics, cfg.to_dict(), log_path=log_path,
                       adapter_dir=save_dir if cfg.method != "full" else None, model=model, tokenizer=tok,
                       samples=scored)
    result.save()
    return result


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
    """(model, tokenizer, info): AutoModelForSequenceClassification with one output, LoRA unless method='full'."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from labkit.models.device import resolve_device, resolve_dtype
    from labkit.models.loading import load_tokenizer, resolve_model_path

    dev = resolve_device(cfg.device)
    compute_dtype = resolve_dtype(cfg.dtype, dev)
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)  # the score head is freshly initialised
    with quiet_progress():
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(cfg.model), num_labels=1,
            dtype=torch.float32 if cfg.method == "full" else compute_dtype)
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
                  out: pathlib.Path, extra_callbacks=()):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    args = TRLRewardConfig(**trainer_args(cfg, info, out, quiet=len(callbacks) > 1), save_strategy="no",
                           max_length=cfg.max_length, center_rewards_coefficient=cfg.center_rewards or None)
    pairs = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train_rows])
    with quiet_progress():
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tok,
                                callbacks=[TrainerCallbackAdapter(callbacks), *extra_callbacks])
    trainer.remove_callback(PrinterCallback)
    return trainer


def _probe(cfg: RewardConfig, tok, eval_rows, before: dict, callbacks: Callbacks):
    """A TrainerCallback sending held-out pairwise accuracy as `heldout/accuracy` evals."""
    from transformers import TrainerCallback

    class _Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if before:
                callbacks.on_eval(0, {"heldout/accuracy": before["accuracy"]})

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if cfg.eval_every and eval_rows and state.global_step % cfg.eval_every == 0:
                model.eval()
                acc = pairwise_metrics(score_pairs(model, tok, eval_rows))["accuracy"]
                model.train()
                callbacks.on_eval(state.global_step, {"heldout/accuracy": acc})

    return _Probe()


def _score_head(model):
    """The module that maps the last hidden state to the reward (PEFT wraps it to keep it trainable)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "score":
            return module
    raise TypeError(f"{type(model).__name__} has no `score` head: load it with load_reward_model")


def _head_linear(head) -> torch.nn.Linear:
    if hasattr(head, "modules_to_save"):  # peft ModulesToSaveWrapper: the trained copy is the active one
        active = head.active_adapter if isinstance(head.active_adapter, str) else head.active_adapter[0]
        return head.modules_to_save[active]
    return head


@torch.inference_mode()
def score(model, tok, prompts: Sequence[Any], replies: Sequence[Any], *, batch_size: int = 16) -> list[float]:
    """The reward of each (prompt, reply): message lists (or a plain-string reply to a message-list prompt).

    The head is applied in float32 to the last token's hidden state: in bf16 the rewards of two replies that
    differ by one digit often round to the same value, and a tie would count as a wrong ranking.
    """
    from labkit.data.chat import encode, render

    texts = []
    for p, r in zip(prompts, replies):
        prompt = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        reply = [{"role": "assistant", "content": r}] if isinstance(r, str) else list(r)
        texts.append(encode(tok, render(tok, prompt + reply)))
    pad = model.config.pad_token_id
    head = _score_head(model)
    linear = _head_linear(head)
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda module, args, output: captured.__setitem__("hidden", args[0]))
    out = [0.0] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(texts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, :len(texts[i])] = torch.tensor(texts[i])
                attn[row, :len(texts[i])] = 1
            model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device))
            last = captured["hidden"][torch.arange(len(idx)), attn.sum(-1) - 1]          # [b, H], right-padded
            bias = linear.bias.float() if linear.bias is not None else None
            rewards = torch.nn.functional.linear(last.float(), linear.weight.float(), bias)[:, 0]  # [b]
            for row, i in enumerate(idx):
                out[i] = float(rewards[row])
    finally:
        hook.remove()
    return out


def score_pairs(model, tok, rows: Sequence[dict]) -> list[dict]:
    """Per pair: chosen and rejected rewards, their `source_kind`, and the prompt text."""
    rewards = score(model, tok, [r["prompt"] for r in rows for _ in (0, 1)],
                    [r[k] for r in rows for k in ("chosen", "rejected")])
    return [{"prompt": _text(r["prompt"]), "kind": r.get("source_kind", "all"), "chosen": rewards[2 * i],
             "rejected": rewards[2 * i + 1]} for i, r in enumerate(rows)]


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def pairwise_metrics(scored: Sequence[dict]) -> dict[str, Any]:
    """Accuracy (chosen scored higher), overall and per kind, and the mean margin r_c - r_r."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for s in scored:
        by_kind[s["kind"]].append(s["chosen"] > s["rejected"])
    wins = [s["chosen"] > s["rejected"] for s in scored]
    return {"accuracy": sum(wins) / len(wins), "margin": sum(s["chosen"] - s["rejected"] for s in scored) / len(scored),
            **{f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())}}


def calibration(scored: Sequence[dict], bins: int = 10) -> list[dict]:
    """Reliability table: predicted P(A beats B) = σ(r_A - r_B) against how often A was the chosen reply.

    Each pair is counted in both orders (chosen first: outcome 1; rejected first: outcome 0), so the table is
    symmetric about 0.5 and a perfectly calibrated model lies on the diagonal. `bins` must be even: a bin
    straddling 0.5 would hold both orders of the same pairs and always read 0.5 against 0.5.
    """
    if bins % 2:
        raise ValueError(f"bins must be even, got {bins}")
    points = []
    for s in scored:
        p = 1 / (1 + math.exp(-(s["chosen"] - s["rejected"])))
        points += [(p, 1.0), (1 - p, 0.0)]
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            table.append({"bin": f"{lo:.1f}–{hi:.1f}", "predicted": sum(p for p, _ in inside) / len(inside),
                          "observed": sum(y for _, y in inside) / len(inside), "count": len(inside)})
    return table


def expected_calibration_error(table: Sequence[dict]) -> float:
    """Count-weighted mean |observed - predicted| over the calibration table's bins."""
    n = sum(row["count"] for row in table)
    return sum(row["count"] * abs(row["observed"] - row["predicted"]) for row in table) / n if n else float("nan")
