"""Stage: PPO — labkit's own RLHF-style PPO with a value head, on verifiable rewards, written to be read.

    result = train(RLConfig.from_preset("cpu"), callbacks=[LiveDashboard(RL_PANELS)])

TRL no longer ships a PPO trainer for language models, so this is the loop itself, top to bottom. It is the
PPO of RLHF (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593; Stiennon et al. 2020,
https://arxiv.org/abs/2009.01325; Ouyang et al. 2022, https://arxiv.org/abs/2203.02155) with one change: the
score of a completion comes from code (labkit.rewards: is the final number right…) instead of a reward model.

Each step:

1. the policy samples G completions for each of a few prompts; the reward functions score each completion;
2. one no-grad pass of the policy gives, for every completion token, its log-prob under the sampling policy
   (π_old) and the value head's estimate V_t of the return from there; one pass of the reference (the same
   network with the LoRA adapter off) gives its log-prob under π_ref;
3. every token gets a reward r_t = -β (log π_old - log π_ref) (a k1 KL penalty that keeps the policy near the
   reference), and the last token also gets the completion's score;
4. GAE (Schulman et al. 2016, https://arxiv.org/abs/1506.02438) turns rewards and values into a per-token
   advantage Â_t (then whitened over the batch) and a return target R_t = Â_t + V_t;
5. `ppo_epochs` passes over the batch minimise PPO's clipped surrogate (Schulman et al. 2017,
   https://arxiv.org/abs/1707.06347) plus vf_coef × the clipped value loss, with AdamW;
6. with cfg.kl_target set, β adapts toward the target KL (Ziegler et al. 2019, §2.2: `KLController`).

Where GRPO and RLOO use the other completions of the same prompt as the baseline, PPO learns one: the value
head. The G completions per prompt are kept so that the three methods see the same batch per step.

Details from Huang et al. 2024, "The N Implementation Details of RLHF with PPO" (ICLR blog track,
https://iclr-blogposts.github.io/2024/blog/the-n-implementation-details-of-rlhf-with-ppo/; and "The N+
Implementation Details of RLHF with PPO", https://arxiv.org/abs/2403.17031) that this loop follows: sampling
with top_k=0 and the log-probs of the logits divided by the temperature, so the scored distribution is the
sampled one; dropout off, so the ratio is exactly 1 on the first pass; the score on the last token; whitened
advantages; a clipped value loss; a value head initialised to zero.

Sections: 1 setup · 2 data/rewards · 3 model · 4 pre-flight · 5 baseline eval · 6 loop · 7 eval · 8 save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from labkit.config import RLConfig
from labkit.errors import ConfigError
from labkit.losses.kl import kl_k1, kl_k3
from labkit.metrics.periodic import Stopwatch
from labkit.runs.callbacks import RunHandles
from labkit.runs.result import RunResult
from labkit.stages.common import data_path, saved_model, single_process, track, warmup_steps
from labkit.stages.rl_common import build_rewards, finish_run, load_prompt_rows, start_run

Tensor = torch.Tensor


def train(cfg: RLConfig, callbacks=(), reward_funcs=None, *, force: bool = False) -> RunResult:
    """PPO with a value head on a LoRA policy; the reference is the policy with its adapter off.

    Args:
        cfg: an RLConfig; PPO reads ppo_epochs, vf_coef, gamma, lam, beta and (for an adaptive KL penalty)
            kl_target / kl_horizon beside the fields every RL stage uses.
        callbacks: labkit callbacks (a LiveDashboard(RL_PANELS)…) that receive every step and eval.
        reward_funcs: your own functions in TRL's protocol (a labkit.rewards.learned_reward…), used instead
            of the names in cfg.rewards (cfg.reward_weights then weighs them), as in GRPO.
        force: run again even when this manifest already finished in cfg.output_dir (else a no-op).
    Returns:
        a RunResult like labkit.stages.grpo.train's, plus the final `kl_coef` and the value head's path.
        PPO keeps no optimizer checkpoints: a run resumed after a failure starts over.
    Raises:
        PreflightError before the first step when the run cannot learn; ConfigError for bad settings.

    Example:
        result = train(RLConfig.from_preset("cpu-smoke"))
        result.metrics["after"]["accuracy"], result.metrics["kl_coef"]
    """
    from transformers import get_scheduler, set_seed

    from labkit.losses.advantages import gae, whiten
    from labkit.losses.policy import masked_mean
    from labkit.models import adapters
    from labkit.models.loading import load_tokenizer
    from labkit.models.logprobs import token_logprobs
    from labkit.rewards import reward_names

    # 1. setup ------------------------------------------------------------------------------------
    single_process("ppo")
    set_seed(cfg.seed)
    out = pathlib.Path(cfg.output_dir).resolve()
    kl_ctl = KLController(cfg.beta, cfg.kl_target, cfg.kl_horizon)  # checks kl_target / kl_horizon

    # 2. data and rewards: validated before a model is loaded --------------------------------------
    tok = load_tokenizer(cfg.model)
    train_rows, eval_rows = load_prompt_rows(cfg, tok)
    funcs = list(reward_funcs) if reward_funcs is not None else build_rewards(cfg)
    cfg = cfg.replace(rewards=",".join(reward_names(funcs))) if reward_funcs is not None else cfg

    # the run: manifest.json before any model is loaded; a finished identical run is not run again ----------
    run = track("ppo", cfg, data=[data_path(cfg.data)], rewards=funcs, force=force)
    if run.skipped:
        return run.stored_result(saved_model(cfg, out))
    with run:  # an exception marks the run failed (Ctrl-C: interrupted), with the error, and is re-raised
        # 3. model: LoRA policy + value head on the same trunk -----------------------------------------
        model, tok, info = adapters.load_for_training(
            cfg.model, method="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, dtype=cfg.dtype,
            device=cfg.device, seed=cfg.seed, kernels=cfg.kernels)
        device = torch.device(info["device"])
        net = PolicyWithValue(model, model.config.hidden_size).to(device)
        # Dropout off in every forward (eval mode still has gradients): with dropout the ratio π/π_old would
        # not be 1 on the first pass over a batch, and clipping would act on noise.
        net.eval()
        # bf16 autocast where the compute dtype is bf16 (what the TRL stages get from bf16=True); else no-op.
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) \
            if info["compute_dtype"] == "bfloat16" else contextlib.nullcontext

        # 4-5. pre-flight (a probe batch sampled and scored before any step) and the baseline eval ---------
        rl = start_run("ppo", cfg, model, tok, info, train_rows, eval_rows, funcs, out, callbacks,
                       model_note=" + value head", tracker=run)
        cbs, rollouts, telemetry = rl.callbacks, rl.rollouts, run.telemetry

        # 6. loop -------------------------------------------------------------------------------------
        trainable = [p for p in net.parameters() if p.requires_grad]  # LoRA A/B and the value head
        optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
        updates = cfg.max_steps * cfg.ppo_epochs  # one optimizer step per PPO epoch (one minibatch)
        scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup_steps(cfg, updates),
                                  num_training_steps=updates)
        batches = prompt_batches(train_rows, cfg.prompts_per_step, cfg.seed)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

        cbs.on_start({"max_steps": cfg.max_steps, "algorithm": "ppo", "output_dir": str(out),
                      "train_batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                      "handles": RunHandles(model, tok, cbs)})
        last_step: dict[str, float] = {}
        losses: list[float] = []
        clock = Stopwatch()
        if rl.heldout:
            rl.heldout.clock = clock
        step = 0
        for step in range(1, cfg.max_steps + 1):
            # 6a. rollouts: G sampled completions per prompt, scored by the reward functions ----------------
            rows = next(batches)
            with autocast(), telemetry.phase("generation"):
                roll = sample_rollouts(model, tok, rows, funcs, cfg)
            batch = pack(roll.prompt_ids, roll.completion_ids, pad_id, device)
            mask = batch.mask                                                    # [B, C] completion tokens
            scores = torch.tensor(roll.scores, device=device)                    # [B]

            # 6b. one no-grad pass each: the policy (π_old log-probs, values, entropy) and the reference --
            with torch.no_grad(), autocast():
                logits, old_values = net(batch, cfg.temperature)                 # [B, C, V], [B, C]
                old_logp = token_logprobs(logits, batch.labels)                  # [B, C]
                entropy = token_entropy(logits)                                  # [B, C]
                del logits
                with net.reference() as ref:
                    # [B, C]
                    ref_logp = token_logprobs(completion_logits(ref, batch, cfg.temperature)[0], batch.labels)

            # 6c. per-token rewards (KL penalty + score on the last token), GAE, whitened advantages ------
            kl_coef = kl_ctl.value
            rewards, kl = shape_rewards(scores, old_logp, ref_logp, mask, kl_coef)  # [B, C] x 2
            advantages, returns = gae(rewards, old_values, mask, gamma=cfg.gamma, lam=cfg.lam)  # [B, C] x 2
            advantages = whiten(advantages, mask)                                # [B, C]

            # 6d. PPO epochs: the whole batch as one minibatch, one optimizer step per epoch --------------
            epoch_stats = ppo_epochs(net, batch, old_logp, old_values, advantages, returns, optimizer,
                                     scheduler, cfg, autocast)
            telemetry.add_tokens(trained=int(batch.attention_mask.sum()) * cfg.ppo_epochs)

            # 6e. the KL controller and the logs -------------------------------------------------------
            kl_per_completion = float(kl.sum(-1).mean())                       # k1, nats per completion
            kl_ctl.update(kl_per_completion, 1)
            # What the dashboard shows: k3, never negative (k1's batch mean can be; it is logged too).
            kl_shown = torch.where(mask.bool(), kl_k3(old_logp, ref_logp), 0.0)   # [B, C]
            # The rollout log's one number per completion: its whitened advantages averaged over its tokens.
            seq_adv = masked_mean(advantages, mask, dim=-1)                      # [B]
            rollouts.record(step, roll.prompts, roll.completions, roll.per_fn,
                            tokens=[len(c) for c in roll.completion_ids],
                            truncated=[not f for f in roll.finished], advantages=seq_adv.tolist())
            # Averages over the PPO epochs (the first epoch's clip fraction and approx KL are 0: ratio = 1).
            metrics = {k: sum(s[k] for s in epoch_stats) / len(epoch_stats) for k in epoch_stats[0]}
            metrics.update(reward_stats(roll.scores, roll.per_fn, cfg.num_generations))
            metrics.update({
                "kl": float(masked_mean(kl_shown, mask)), "kl_per_completion": float(kl_shown.sum(-1).mean()),
                "kl_k1_per_completion": kl_per_completion, "kl_coef": kl_coef,
                "entropy": float(masked_mean(entropy, mask)),
                "completions/mean_length": float(mask.sum(-1).float().mean()),
                "completions/clipped_ratio": sum(not f for f in roll.finished) / len(roll.finished),
                "learning_rate": scheduler.get_last_lr()[0]})
            losses.append(metrics["loss"])
            last_step = metrics
            cbs.on_step(step, metrics)

            # 6f. the run's budget (the held-out eval, a callback, ran in on_step when it was due) -----------
            if run.over_budget(step, cfg.max_steps):
                break
        telemetry.add_seconds("loop", clock.wall)

        # 7. eval: the held-out eval's last point (a no-op when it measured this step already) --------------
        last_eval = rl.heldout.run(step) or rl.heldout.latest[1] if rl.heldout else {}
        train_loss = sum(losses) / len(losses)
        cbs.on_end({"global_step": step, "train_loss": train_loss, "train_runtime": clock.training,
                    "kl_coef": kl_ctl.value, "last_step": dict(last_step),
                    "last_eval": {f"heldout/{k}": v for k, v in last_eval.items()}})

        # 8. save ---------------------------------------------------------------------------------------
        save_dir = out / "adapter"
        model.save_pretrained(str(save_dir))
        tok.save_pretrained(str(save_dir))
        value_path = out / "value_head.pt"
        torch.save(net.value_head.state_dict(), value_path)
        metrics, samples = finish_run(rl, "ppo", cfg, info, steps=step, train_loss=train_loss,
                                      prompts=len(train_rows), clock=clock, loss_type="ppo",
                                      kl_coef=kl_ctl.value, value_head=str(value_path))
        if metrics["after"]:
            metrics["after"]["kl"] = last_step.get("kl_per_completion")  # nats per completion, as GRPO's
        result = RunResult("ppo", out, metrics, cfg.to_dict(), log_path=rl.log_path, adapter_dir=save_dir,
                           model=model, tokenizer=tok, samples=samples)
        return run.complete(result, outputs={"adapter": save_dir})


# ------------------------------------------------------------------------------------------------------------
# the model: policy + value head
# ------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Batch:
    """One step's rollouts as tensors: prompts left-padded to P tokens,
    completions right-padded to C after them.

    Left-padding the prompts lines every completion up at column P, so "the completion tokens" is one slice.
    """

    input_ids: Tensor        # [B, P+C]
    attention_mask: Tensor   # [B, P+C] 1 on real tokens
    labels: Tensor           # [B, C] completion ids, IGNORE_INDEX on padding
    mask: Tensor             # [B, C] 1 on completion tokens (the EOS that ended a reply included)


def pack(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int,
         device: torch.device | str = "cpu") -> Batch:
    """Prompt and completion token ids as one padded batch (see Batch)."""
    from labkit.models.logprobs import IGNORE_INDEX

    n, p, c = len(prompt_ids), max(map(len, prompt_ids)), max(map(len, completion_ids))
    ids = torch.full((n, p + c), pad_id, dtype=torch.long)                 # [B, P+C]
    attn = torch.zeros_like(ids)                                           # [B, P+C]
    for i, (pr, co) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, p - len(pr):p], attn[i, p - len(pr):p] = torch.tensor(pr), 1
        ids[i, p:p + len(co)], attn[i, p:p + len(co)] = torch.tensor(co), 1
    mask = attn[:, p:]                                                     # [B, C]
    labels = ids[:, p:].masked_fill(mask == 0, IGNORE_INDEX)               # [B, C]
    return Batch(ids.to(device), attn.to(device), labels.to(device), mask.to(device))


def completion_logits(model, batch: Batch, temperature: float = 1.0, *, hidden: bool = False
                      ) -> tuple[Tensor, Tensor | None]:
    """(logits, last hidden state) at the positions that predict each completion token.

    Logits are divided by the sampling temperature, so their log-softmax is the distribution the tokens were
    drawn from. Position ids count real tokens only, as generate() did for the left-padded prompts.

    Shapes:
        returns: logits [B, C, V] (position P-1+t predicts completion token t), hidden [B, C, H] or None
    """
    c = batch.labels.shape[1]
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)     # [B, P+C]
    # lm head on the last C+1 positions only
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
                logits_to_keep=c + 1, output_hidden_states=hidden)
    logits = out.logits[:, :-1] / temperature                              # [B, C, V]
    states = out.hidden_states[-1][:, -c - 1:-1] if hidden else None       # [B, C, H] after the final norm
    return logits, states


class PolicyWithValue(torch.nn.Module):
    """The LoRA policy and a value head V(s_t) = w·h_t + b on its last hidden state.

    The value head shares the policy's trunk: one forward pass gives both the next-token logits and the
    values, and the only new weights are H + 1 numbers. On a CPU that is the cheap choice: a separate value
    network (as InstructGPT had) would double the memory and the forward/backward passes of every step. The
    price is that the value loss also moves the shared LoRA adapters (vf_coef weighs it against the policy
    loss). The reference is the same network with the adapter off (`reference()`), so there is no third
    copy either.
    """

    def __init__(self, policy, hidden_size: int):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(hidden_size, 1)
        # Zero at the start: the first returns are learned from, not fought against (Huang et al. 2024).
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: Batch, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """(logits [B, C, V] at the completion positions, values [B, C] of the states before each token)."""
        # [B, C, V], [B, C, H]
        logits, hidden = completion_logits(self.policy, batch, temperature, hidden=True)
        # The head runs in fp32 outside autocast: the values are regression outputs, and it costs nothing.
        with torch.autocast(hidden.device.type, enabled=False):
            values = self.value_head(hidden.float()).squeeze(-1)           # [B, C]
        return logits, values

    def reference(self):
        """Context manager giving π_ref: the policy network with its LoRA adapter switched off."""
        from labkit.metrics.kl import as_reference

        return as_reference(self.policy)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at each position: H = logsumexp(z) - Σ_v softmax(z)_v z_v.

    Shapes:
        logits: [B, T, V]; returns: [B, T] float32, in nats
    """
    z = logits.float()                                                     # [B, T, V]
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1)  # [B, T]


def ppo_epochs(net: PolicyWithValue, batch: Batch, old_logp: Tensor, old_values: Tensor, advantages: Tensor,
               returns: Tensor, optimizer, scheduler, cfg: RLConfig, autocast) -> list[dict[str, float]]:
    """cfg.ppo_epochs passes over one batch of rollouts, one optimizer step each: PPO's clipped surrogate plus
    vf_coef × the clipped value loss. Returns each epoch's losses and clip statistics.

    Shapes:
        old_logp, old_values, advantages, returns: [B, C] on the completion tokens (batch.mask)
    """
    from labkit.losses.policy import ppo_policy_loss, ppo_value_loss
    from labkit.models.logprobs import token_logprobs

    trainable = [p for p in net.parameters() if p.requires_grad]
    stats: list[dict[str, float]] = []
    for _ in range(cfg.ppo_epochs):
        with autocast():
            logits, values = net(batch, cfg.temperature)                     # [B, C, V], [B, C]
            logp = token_logprobs(logits, batch.labels)                      # [B, C]
        del logits
        pg_loss, pg_stats = ppo_policy_loss(logp, old_logp, advantages, batch.mask, clip_eps=cfg.epsilon)
        # The value clip range is in reward units; cfg.epsilon (0.2) suits scores in [0, 1].
        v_loss, v_stats = ppo_value_loss(values, old_values, returns, batch.mask, clip_eps=cfg.epsilon)
        loss = pg_loss + cfg.vf_coef * v_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        stats.append({"loss": loss.item(), "policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
                      "grad_norm": float(grad_norm), **pg_stats, **v_stats})
    return stats


# ------------------------------------------------------------------------------------------------------------
# rollouts and rewards
# ------------------------------------------------------------------------------------------------------------

def prompt_batches(rows: Sequence[dict], k: int, seed: int) -> Iterator[list[dict]]:
    """Endless batches of k rows: a seeded shuffle of all rows, reshuffled after each pass over them."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        while len(order) < k:
            order += rng.sample(range(len(rows)), len(rows))
        yield [rows[i] for i in order[:k]]
        del order[:k]


@dataclasses.dataclass
class Rollouts:
    """One step's samples: every list has B = prompts × G entries,
    the G completions of a prompt consecutive."""

    prompts: list[Any]                      # message lists, each repeated G times
    completions: list[Any]                  # [{"role": "assistant", "content": text}], as TRL passes them
    prompt_ids: list[list[int]]             # the templated prompt's tokens
    completion_ids: list[list[int]]         # the sampled tokens, with the EOS that ended a reply
    finished: list[bool]                    # ended on EOS rather than at max_completion_length
    per_fn: dict[str, list[float | None]]   # each reward function's scores
    scores: list[float]                     # the weighted total (None counts as 0, as in TRL)


def sample_rollouts(model, tok, rows: Sequence[dict], funcs: Sequence, cfg: RLConfig) -> Rollouts:
    """G completions per row, sampled from the full distribution at cfg.temperature and scored.

    top_k=0 switches off transformers' default top-50 filter: the PPO ratio needs log-probs of the
    distribution the tokens were actually drawn from. The reward functions get what TRL gives them: prompts,
    message-list completions, the rows' other columns (answer…) and completion_ids.
    """
    from labkit.data.chat import encode
    from labkit.models.generate import generate
    from labkit.rewards import score_completions

    g = cfg.num_generations
    prompts = [r["prompt"] for r in rows for _ in range(g)]
    columns = {k: [r[k] for r in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
    gens = generate(model, tok, prompts, max_new_tokens=cfg.max_completion_length, do_sample=True,
                    temperature=cfg.temperature, top_k=0, batch_size=len(prompts))
    completions = [[{"role": "assistant", "content": o.text}] for o in gens]
    completion_ids = [list(o.token_ids) for o in gens]
    scored = score_completions(funcs, prompts, completions, weights=cfg.weights,
                               completion_ids=completion_ids, **columns)
    return Rollouts(prompts, completions, [encode(tok, o.prompt) for o in gens], completion_ids,
                    [o.finished for o in gens], scored["per_function"], scored["total"])


def shape_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, kl_coef: float
                  ) -> tuple[Tensor, Tensor]:
    """RLHF's per-token reward: a KL penalty on every completion token, plus the task score on the last one.

    Ziegler et al. 2019 (Eq. 2), with the KL estimated per sampled token by k1 (labkit.losses.kl):

        kl_t = log π_old(y_t) - log π_ref(y_t)
        r_t  = -β kl_t + [t is the last completion token] · score

    The penalty uses the sampling policy's log-probs and is a fixed reward, not a loss term: no gradient flows
    through it. Summed over a completion, Σ_t r_t = score - β·(its sampled KL).

    Shapes:
        scores: [B] task reward per completion; logp, ref_logp: [B, T]; mask: [B, T] (bool or 0/1)
        returns: rewards [B, T], kl [B, T] (both 0 off the mask)
    """
    m = mask.bool()                                                        # [B, T]
    kl = torch.where(m, kl_k1(logp, ref_logp), 0.0)                        # [B, T]
    rewards = -kl_coef * kl                                                # [B, T]
    last = m & (m.cumsum(-1) == m.sum(-1, keepdim=True))                   # [B, T] one True per non-empty row
    rewards = rewards + last * scores.to(rewards.dtype).unsqueeze(-1)      # [B, T]
    return rewards, kl


class KLController:
    """β, the weight of the KL penalty in the reward: fixed, or adaptive toward a target KL.

    Ziegler et al. 2019, https://arxiv.org/abs/1909.08593 (§2.2). With the KL of the last batch (nats per
    completion, summed over its tokens) and a horizon H:

        e = clip(KL / target - 1, -0.2, 0.2)        β ← β (1 + e · n_steps / H)

    so β grows while the policy drifts past the target and shrinks while it stays inside, by at most 20 % per
    H steps. target None keeps β fixed. A β of 0 stays 0 (the update is multiplicative).
    """

    def __init__(self, init: float, target: float | None = None, horizon: int = 100):
        if target is not None and not target > 0:
            raise ConfigError("kl_target",
                              f"must be a positive KL in nats (or None for a fixed beta), got {target}",
                              config="RLConfig")
        if horizon < 1:
            raise ConfigError("kl_horizon", f"must be at least 1 step, got {horizon}", config="RLConfig")
        self.value = float(init)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int = 1) -> float:
        """Move β after a batch whose KL was `current_kl`, `n_steps` steps since the last update;
        returns β."""
        if self.target is not None and math.isfinite(current_kl):
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return f"KLController(value={self.value:.4g}, target={self.target}, horizon={self.horizon})"


def reward_stats(scores: Sequence[float], per_fn: dict[str, list[float | None]], group_size: int
                 ) -> dict[str, float]:
    """The reward metrics under TRL GRPO's names: reward, reward_std, rewards/<fn>/mean|std,
    frac_reward_zero_std.

    Stds are sample stds (n-1) over the batch, as TRL's; a function's None scores are left out of its stats.
    frac_reward_zero_std is the share of prompts whose G completions all scored the same.
    """
    def mean_std(values: Sequence[float]) -> tuple[float, float]:
        if not values:
            return math.nan, math.nan
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return mean, math.sqrt(var)

    out: dict[str, float] = {}
    out["reward"], out["reward_std"] = mean_std(list(scores))
    for name, values in per_fn.items():
        out[f"rewards/{name}/mean"], out[f"rewards/{name}/std"] = mean_std(
            [v for v in values if v is not None])
    groups = [scores[i:i + group_size] for i in range(0, len(scores), group_size)]
    out["frac_reward_zero_std"] = sum(max(g) - min(g) <= 1e-8 for g in groups) / len(groups)
    return out


