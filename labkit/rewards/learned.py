"""A learned reward: the reward model the reward stage trained, as a reward function for GRPO, RLOO and PPO.

    rm = learned_reward("runs/reward")                     # the reward stage's output_dir
    grpo.train(cfg, reward_funcs=[rm])                     # RLHF against the learned reward alone
    grpo.train(cfg.replace(reward_weights="1,0.5"),        # or mixed with a verifiable reward
               reward_funcs=[correctness, rm])

The reward model keeps its own tokenizer and chat template (saved beside its weights by the reward stage):
the policy's completions are read as text, put after the prompt in a conversation and templated by the
reward model's tokenizer, so a policy with a different vocabulary or template can be scored. Scoring runs
in batches under `torch.inference_mode`: no gradient ever reaches the reward model.

Every check is made when the reward is built, before any training work: the folder exists and holds a
saved model or adapter, the tokenizer has a chat template, and a probe conversation comes out as one
finite number per reply. `score_replies` is the one scoring routine; labkit.metrics.reward_model.score
(held-out accuracy, best-of-n) is the same function.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import torch

from labkit.data.answers import completion_text
from labkit.errors import ConfigError, DataError

PROBE = ([{"role": "user", "content": "What is 2 + 3?"}], "#### 5")


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
def score_replies(model, tok, prompts: Sequence[Any], replies: Sequence[Any], *,
                  batch_size: int = 16) -> list[float]:
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
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
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
            # [b, H], right-padded
            last = captured["hidden"][torch.arange(len(idx)), attn.sum(-1) - 1]
            bias = linear.bias.float() if linear.bias is not None else None
            rewards = torch.nn.functional.linear(last.float(), linear.weight.float(), bias)[:, 0]  # [b]
            for row, i in enumerate(idx):
                out[i] = float(rewards[row])
    finally:
        hook.remove()
    return out


def find_saved(run_dir: str | pathlib.Path) -> tuple[pathlib.Path, str]:
    """(folder with the weights, "model" | "adapter") of a reward-stage run folder, or of that folder itself.

    ConfigError('reward_model') naming what is missing otherwise.
    """
    path = pathlib.Path(run_dir).expanduser()
    if not path.is_dir():
        raise ConfigError("reward_model", f"'{run_dir}' is not a folder: pass the reward stage's output_dir "
                          "(labkit.stages.reward.train(cfg).output_dir)")
    for sub in ("model", "adapter"):
        if (path / sub).is_dir():
            path = path / sub
            break
    if (path / "adapter_config.json").exists():
        return path, "adapter"
    if (path / "config.json").exists():
        return path, "model"
    raise ConfigError("reward_model", f"'{run_dir}' holds no saved reward model (no model/ or adapter/ with "
                      "config.json or adapter_config.json); did the reward stage finish?")


def _base_model(folder: pathlib.Path, run_dir: pathlib.Path) -> str:
    """The base model an adapter was trained on: the run's manifest, else the adapter's own config."""
    for manifest in (run_dir / "manifest.json", folder.parent / "manifest.json"):
        if manifest.exists():
            model = json.loads(manifest.read_text()).get("config", {}).get("model")
            if model:
                return str(model)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError("reward_model", f"{folder}/adapter_config.json names no base model and the run has "
                          "no manifest.json")
    return str(base)


def load_reward_model(run_dir: str | pathlib.Path, *, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) of a trained reward model, in eval mode with no parameter needing a gradient."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from labkit.data.chat import require_chat_template
    from labkit.models.device import resolve_device, resolve_dtype
    from labkit.models.loading import resolve_model_path
    from labkit.quiet import expected_load_report, quiet_progress

    folder, kind = find_saved(run_dir)
    tok = AutoTokenizer.from_pretrained(str(folder))  # the reward stage saves its tokenizer with the weights
    require_chat_template(tok, f"reward model {folder}")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev) if kind == "adapter" else torch.float32
    source = (str(folder) if kind == "model"
              else resolve_model_path(_base_model(folder, pathlib.Path(run_dir))))
    with quiet_progress(), expected_load_report():  # an adapter's head is missing from the base: expected
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch_dtype)
        if kind == "adapter":
            model = PeftModel.from_pretrained(model, str(folder))
    model.config.pad_token_id = tok.pad_token_id
    model.requires_grad_(False)
    return model.to(dev).eval(), tok


class LearnedReward:
    """A trained reward model as a reward function in TRL's protocol: `fn(prompts, completions, **kw)`.

    Build it with `learned_reward(run_dir)` (or from a loaded model and tokenizer); `scale` and `shift`
    map the raw score to `scale * (r - shift)`, for mixing with verifiable rewards in [0, 1]. The instance's
    `__name__` is what TRL logs (`rewards/<name>/mean`). `calls` and `scored` count the work done.
    """

    def __init__(self, model, tok, *, name: str = "learned", batch_size: int = 16, scale: float = 1.0,
                 shift: float = 0.0, source: str = "reward model"):
        from labkit.data.chat import require_chat_template

        if batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
        require_chat_template(tok, source)
        self.model, self.tok = model, tok
        self.batch_size, self.scale, self.shift = batch_size, float(scale), float(shift)
        self.source = source
        self.__name__ = name
        self.calls = self.scored = 0
        self._check_head()

    def _check_head(self) -> None:
        """One probe conversation through the model: one finite number per reply, or a ConfigError now."""
        try:
            linear = _head_linear(_score_head(self.model))
        except TypeError as exc:
            raise ConfigError("reward_model", f"{self.source}: {exc}") from None
        if linear.weight.shape[0] != 1:
            raise ConfigError("reward_model", f"{self.source}: the score head has {linear.weight.shape[0]} "
                              "outputs; a reward model has exactly one (num_labels=1)")
        probe = score_replies(self.model, self.tok, [PROBE[0]] * 2, [PROBE[1]] * 2, batch_size=2)
        if len(probe) != 2 or not all(torch.isfinite(torch.tensor(probe))):
            raise ConfigError("reward_model", f"{self.source}: the probe conversation scored {probe}; "
                              "expected one finite reward per reply")

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise DataError("learned reward", None, "prompts",
                            f"{len(prompts)} prompts for {len(completions)} completions")
        replies = [completion_text(c) for c in completions]
        raw = score_replies(self.model, self.tok, list(prompts), replies, batch_size=self.batch_size)
        self.calls += 1
        self.scored += len(raw)
        return [self.scale * (r - self.shift) for r in raw]

    def __repr__(self) -> str:
        return f"learned_reward({self.source!r}, name={self.__name__!r})"


def learned_reward(run_dir: str | pathlib.Path, *, name: str = "learned", batch_size: int = 16,
                   scale: float = 1.0, shift: float = 0.0, device: str = "auto",
                   dtype: str = "auto") -> LearnedReward:
    """The reward model in a reward-stage output folder as a reward function (see LearnedReward).

    Raises ConfigError / DataError naming the folder when it is missing, holds no saved model, has no chat
    template, or its head does not give one number per reply: before any policy is loaded.
    """
    model, tok = load_reward_model(run_dir, device=device, dtype=dtype)
    return LearnedReward(model, tok, name=name, batch_size=batch_size, scale=scale, shift=shift,
                         source=f"reward model {run_dir}")
