"""Asynchronous GRPO with a staleness bound: rollout workers in their own processes, a trainer fed by a queue.

    trainer process                                     worker processes (torch.multiprocessing)
    ───────────────                                     ────────────────────────────────────────
    dispatch prompt groups ── inbox (per worker) ──▶    HFEngine.generate(..., logprobs=True) with the
    consume finished groups ◀── outbox (per worker) ──  weights of policy version v; every token is tagged v
    GRPO step → version v+1
    every `sync_every` steps: full / adapter / delta weights ──▶ engine.update_weights (no restart)

A group's lag is the trainer's step minus the oldest policy version among its tokens. Two rules keep every
consumed group within `staleness`: the dispatcher only hands out a group whose intended step is at most
`staleness` versions ahead of the weights its worker holds (AReaL's rule, https://arxiv.org/abs/2505.24298),
and the trainer drops (and replaces) any group that is staler anyway when its turn comes.

Modes: "disaggregated" runs generation and training at once; "collocated" alternates them on one pool and
puts the engines to sleep while the trainer works (HFEngine.sleep: on a GPU it frees the engine's memory).
Partial rollouts (`partial_tokens` > 0) cut a generation at that many tokens, park it, and resume it after
the next weight update, so one completion mixes policy versions (Kimi k1.5, https://arxiv.org/abs/2501.12599).
Truncated importance sampling (`importance_sampling`) weights each token by min(π_θ / π_behaviour, is_cap)
(Yao et al. 2025, https://fengyao.notion.site/off-policy-rl). Everything is recorded as events for Gantt
charts (labkit.dash.rlsys).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from labkit.config import AsyncRLConfig
from labkit.errors import LabkitError


class RolloutError(LabkitError):
    """The rollout workers stopped answering or failed; the message carries the worker's error."""


@dataclasses.dataclass
class Group:
    """One prompt's G completions, possibly unfinished (parked), with the version of every token."""

    group_id: int
    prompt: str
    answer: str
    prompt_ids: list[int]
    tokens: list[list[int]]
    logprobs: list[list[float]]
    versions: list[list[int]]
    finished: list[bool]
    rewards: list[float] | None = None

    @property
    def min_version(self) -> int:
        return min((v for vs in self.versions for v in vs), default=10 ** 9)

    @property
    def version_mix(self) -> dict[int, int]:
        """Policy version → how many of the group's tokens it generated."""
        mix: dict[int, int] = {}
        for vs in self.versions:
            for v in vs:
                mix[v] = mix.get(v, 0) + 1
        return dict(sorted(mix.items()))

    def done(self) -> bool:
        return all(self.finished)


# -- model building, shared by the trainer and the workers -----------------------------------------------

def build_model(cfg: AsyncRLConfig):
    """The initial policy (model, tokenizer): identical in every process for the same config."""
    from labkit.models import load_model, load_tokenizer, tiny_model

    dtype = torch.float32 if cfg.dtype == "float32" else torch.bfloat16
    if cfg.model == "tiny":
        return tiny_model(load_tokenizer(), seed=cfg.seed, dtype=dtype)
    return load_model(cfg.model, device="cpu", dtype=dtype)


def prompt_rows(cfg: AsyncRLConfig, tok) -> tuple[list[dict], list[dict]]:
    """(train, held-out) arithmetic prompt rows with chat-templated token ids; train shuffled by seed."""
    import random

    from labkit.data.samples import load_sample

    def encode(row: dict) -> dict:
        messages = [{"role": "user", "content": row["prompt"]}]
        if cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return {"prompt": row["prompt"], "answer": str(row["answer"]),
                "ids": tok(text, add_special_tokens=False)["input_ids"]}

    train = [encode(r) for r in load_sample("arithmetic_prompts", "train")]
    random.Random(cfg.seed).shuffle(train)
    held = [encode(r) for r in load_sample("arithmetic_prompts", "heldout")[: cfg.n_eval]]
    return train, held


# -- the worker process ----------------------------------------------------------------------------------

def _worker_main(wid: int, cfg: AsyncRLConfig, adapter_dir: str | None, inbox, outbox) -> None:
    """A rollout worker: load the policy, then serve messages from `inbox` until "stop"."""
    try:
        _serve(wid, cfg, adapter_dir, inbox, outbox)
    except Exception as exc:  # the trainer turns this into a RolloutError with the message
        outbox.put(("error", wid, f"{type(exc).__name__}: {exc}"))


def _serve(wid: int, cfg: AsyncRLConfig, adapter_dir: str | None, inbox, outbox) -> None:
    from labkit.infer.engine import SamplingParams
    from labkit.infer.hf import HFEngine
    from labkit.quiet import quiet_progress
    from labkit.rewards.verifiable import get_rewards, length_reward

    funcs = [length_reward(cfg.length_budget) if f.__name__ == "length" else f
             for f in get_rewards(cfg.rewards)]
    t0 = time.time()
    with quiet_progress():
        model, tok = build_model(cfg)
    engine = HFEngine(model, tok, batch_size=64)
    adapter = None
    if adapter_dir is not None and cfg.sync_kind == "adapter":
        engine.load_adapter("policy", adapter_dir)
        adapter = "policy"
    version = 0
    outbox.put(("ready", wid, os.getpid(), t0, time.time()))
    while True:
        msg = inbox.get()
        kind = msg[0]
        if kind == "stop":
            break
        if kind == "weights":
            _, new_version, payload_kind, state, nbytes = msg
            t1 = time.time()
            if payload_kind == "adapter":
                engine.update_weights(state, adapter="policy")
            else:
                engine.update_weights(state)
            version = new_version
            outbox.put(("synced", wid, version, payload_kind, nbytes, t1, time.time()))
        elif kind in ("sleep", "wake"):
            t1 = time.time()
            engine.sleep() if kind == "sleep" else engine.wake()
            outbox.put(("event", wid, kind, t1, time.time()))
        elif kind == "task":
            _, task_id, group = msg
            t1 = time.time()
            outbox.put(("start", wid, task_id, version, t1))
            todo = [i for i, f in enumerate(group.finished) if not f]
            budget = cfg.max_new_tokens if cfg.partial_tokens <= 0 else cfg.partial_tokens
            # One call per remaining-length bucket keeps every request within max_new_tokens.
            by_room: dict[int, list[int]] = {}
            for i in todo:
                by_room.setdefault(min(budget, cfg.max_new_tokens - len(group.tokens[i])), []).append(i)
            for room, members in by_room.items():
                params = SamplingParams(temperature=cfg.temperature, max_new_tokens=room, logprobs=True,
                                        seed=cfg.seed * 1_000_003 + task_id * 101 + room)
                outs = engine.generate([group.prompt_ids + group.tokens[i] for i in members], params,
                                       adapter=adapter)
                for i, out in zip(members, outs):
                    group.tokens[i] += out.token_ids
                    group.logprobs[i] += out.logprobs
                    group.versions[i] += [version] * out.num_tokens
                    group.finished[i] = (out.finish_reason == "stop"
                                         or len(group.tokens[i]) >= cfg.max_new_tokens)
            if group.done():
                texts = [tok.decode(t, skip_special_tokens=True) for t in group.tokens]
                prompts, answers = [group.prompt] * len(texts), [group.answer] * len(texts)
                # No completion_ids: the length reward then counts words, which vary even for a random model.
                scores = [f(prompts, texts, answer=answers) for f in funcs]
                group.rewards = [float(sum(r or 0.0 for r in col)) for col in zip(*scores)]
            outbox.put(("done", wid, task_id, version, t1, time.time(), group))


# -- the trainer side ------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunLog:
    """What a run recorded: steps, weight syncs, held-out accuracy, events for Gantt charts, bookkeeping."""

    config: dict[str, Any]
    steps: list[dict] = dataclasses.field(default_factory=list)
    syncs: list[dict] = dataclasses.field(default_factory=list)
    evals: list[dict] = dataclasses.field(default_factory=list)
    events: list[dict] = dataclasses.field(default_factory=list)
    consumed: list[int] = dataclasses.field(default_factory=list)     # group ids, in consumption order
    batches: list[list[Group]] = dataclasses.field(default_factory=list)
    dropped_stale: int = 0
    duplicates_ignored: int = 0
    workers_replaced: int = 0
    wall_s: float = 0.0
    eval_s: float = 0.0
    final_trainable: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def generated_tokens(self) -> int:
        return sum(s["tokens"] for s in self.steps)

    def summary(self) -> dict[str, float]:
        """Headline numbers: time without evaluation, tokens/s, reward and accuracy at the end, lags."""
        train_s = self.wall_s - self.eval_s
        lags = [lag for s in self.steps for lag in s["lags"]]
        last = self.steps[-3:]
        return {"staleness": self.config["staleness"], "mode": self.config["mode"],
                "seconds": round(train_s, 2),
                "tokens_per_s": round(self.generated_tokens / max(train_s, 1e-9), 1),
                "steps_per_min": round(60 * len(self.steps) / max(train_s, 1e-9), 2),
                "mean_lag": round(sum(lags) / max(len(lags), 1), 2), "max_lag": max(lags, default=0),
                "reward_last": round(sum(s["reward_mean"] for s in last) / max(len(last), 1), 3),
                "accuracy_start": self.evals[0]["accuracy"] if self.evals else float("nan"),
                "accuracy_end": self.evals[-1]["accuracy"] if self.evals else float("nan"),
                "dropped_stale": self.dropped_stale, "workers_replaced": self.workers_replaced}


def completion_batch(groups: Sequence[Group]) -> dict[str, Any]:
    """Right-padded prompt+completion ids, a completion mask, behaviour log-probs, versions and rewards.

    Shapes: ids, attn [B, L]; mask, behaviour [B, L-1] aligned with next-token targets; rewards [B], B = Σ G.
    """
    seqs, masks, behav, rewards = [], [], [], []
    for g in groups:
        for toks, lps, r in zip(g.tokens, g.logprobs, g.rewards or [0.0] * len(g.tokens)):
            seqs.append(g.prompt_ids + toks)
            masks.append([0] * len(g.prompt_ids) + [1] * len(toks))
            behav.append([0.0] * len(g.prompt_ids) + lps)
            rewards.append(r)
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)                         # [B, L]
    attn = torch.zeros_like(ids)                                                  # [B, L]
    mask = torch.zeros(len(seqs), width)                                          # [B, L]
    old = torch.zeros(len(seqs), width)                                           # [B, L]
    for b, (s, m, lp) in enumerate(zip(seqs, masks, behav)):
        ids[b, :len(s)] = torch.tensor(s)
        attn[b, :len(s)] = 1
        mask[b, :len(s)] = torch.tensor(m, dtype=torch.float)
        old[b, :len(s)] = torch.tensor(lp)
    # Position t's logit predicts token t+1: the targets' mask and log-probs move one step left.
    return {"ids": ids, "attn": attn, "mask": mask[:, 1:], "behaviour": old[:, 1:],
            "rewards": torch.tensor(rewards)}


def policy_loss(model, groups: Sequence[Group], group_size: int, *, importance_sampling: bool = False,
                is_cap: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's loss (labkit.losses.grpo_loss, on-policy form) on finished groups, with optional truncated IS.

    w_t = min(exp(log π_θ(o_t) - log π_behaviour(o_t)), is_cap) multiplies each token's advantage (no
    gradient through w); without IS, or on-policy where w = 1, this is the synchronous GRPO loss.
    """
    from labkit.losses.advantages import group_advantages
    from labkit.losses.policy import grpo_loss
    from labkit.models.logprobs import token_logprobs

    batch = completion_batch(groups)
    logits = model(input_ids=batch["ids"], attention_mask=batch["attn"]).logits      # [B, L, V]
    logp = token_logprobs(logits[:, :-1], batch["ids"][:, 1:])                      # [B, L-1]
    mask = batch["mask"]                                                            # [B, L-1]
    adv = group_advantages(batch["rewards"], group_size)                            # [B]
    adv_tok = adv.unsqueeze(1).expand_as(logp)                                      # [B, L-1]
    metrics: dict[str, float] = {}
    if importance_sampling:
        w = torch.exp(logp.detach() - batch["behaviour"]).clamp(max=is_cap)         # [B, L-1]
        adv_tok = adv_tok * w
        metrics["is_weight_mean"] = float((w * mask).sum() / mask.sum().clamp(min=1))
    loss, m = grpo_loss(logp, None, adv_tok, mask)
    with torch.no_grad():
        diff = (logp.detach() - batch["behaviour"]).abs() * mask
        metrics["behaviour_logp_gap"] = float(diff.sum() / mask.sum().clamp(min=1))
    return loss, {**metrics, **m}


def trainable_model(cfg: AsyncRLConfig):
    """(policy, tokenizer): the initial model, wrapped in a LoRA adapter under method 'lora'."""
    from labkit.models.adapters import lora_config

    model, tok = build_model(cfg)
    if cfg.method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg.lora_r, 2 * cfg.lora_r, 0.0, "all-linear"))
    model.train()
    return model, tok


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def replay_synchronous(cfg: AsyncRLConfig, batches: Sequence[Sequence[Group]]
                       ) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The synchronous GRPO loop on given rollouts: same init, same optimizer, one step per batch, no IS.
    Returns each step's loss and the final trainable tensors (what an on-policy trainer ends with)."""
    torch.manual_seed(cfg.seed)
    model, _ = trainable_model(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    losses = []
    for groups in batches:
        loss, _ = policy_loss(model, groups, cfg.group_size)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, trainable_state(model)


class _Run:
    """One run's state: workers, queues, buffers, the policy and its optimizer."""

    def __init__(self, cfg: AsyncRLConfig, progress: bool):
        import torch.multiprocessing as mp

        from labkit.rewards.verifiable import get_rewards

        get_rewards(cfg.rewards)   # an unknown reward name fails here, before any process starts
        self.cfg = cfg
        self.progress = progress
        self.ctx = mp.get_context(cfg.start_method)
        if cfg.start_method == "forkserver":
            # Imported once in the server, so each worker (and each replacement) starts in under a second.
            self.ctx.set_forkserver_preload(["labkit.rlsys.loop", "labkit.infer.hf", "labkit.models.loading",
                                             "transformers.models.llama.modeling_llama"])
        self.log = RunLog(cfg.to_dict())
        self.t0 = time.time()
        torch.manual_seed(cfg.seed)
        self.model, self.tok = trainable_model(cfg)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr)
        self.train_rows, self.held_rows = prompt_rows(cfg, self.tok)
        self.adapter_dir = None
        if cfg.sync_kind == "adapter":
            self.adapter_dir = tempfile.mkdtemp(prefix="labkit-rlsys-")
            self.model.save_pretrained(self.adapter_dir)
        self.step = 0
        self.version_sent = 0            # the newest version every live worker has been sent
        self.next_group = 0
        self.next_task = 0
        self.ready: list[Group] = []     # finished groups waiting for the trainer
        self.parked: list[Group] = []    # unfinished groups waiting for a newer version
        self.assigned: dict[int, tuple[int, Group]] = {}   # task id → (worker id, group as dispatched)
        self.live_task_of_group: dict[int, int] = {}
        self.workers: dict[int, dict] = {}
        self.next_wid = 0
        # Workers start from the same initial weights, so the first delta is measured against them.
        self.last_sent: dict[str, torch.Tensor] = (merged_weights(self.model) if cfg.sync_kind == "delta"
                                                   else {})
        self.sleeping = False

    # -- events and workers ---------------------------------------------------------------------------------

    def event(self, lane: str, kind: str, start: float, end: float, **detail: Any) -> None:
        self.log.events.append({"lane": lane, "kind": kind, "start": start - self.t0, "end": end - self.t0,
                                **detail})

    def spawn(self) -> int:
        wid = self.next_wid
        self.next_wid += 1
        # One outbox per worker: a worker killed while writing can then only break its own queue's lock.
        inbox, outbox = self.ctx.Queue(), self.ctx.Queue()
        proc = self.ctx.Process(target=_worker_main, args=(wid, self.cfg, self.adapter_dir, inbox, outbox),
                                daemon=True)
        proc.start()
        self.workers[wid] = {"proc": proc, "inbox": inbox, "outbox": outbox, "ready": False, "load": 0}
        if self.step > 0:  # a replacement joins at the trainer's current weights
            self.send_weights(wid, full=True)
        return wid

    def reap(self) -> None:
        """Replace dead workers; their unfinished tasks go back to the queue under new task ids."""
        for wid, w in list(self.workers.items()):
            if w["proc"].is_alive():
                continue
            if not w["ready"] or self.log.workers_replaced >= 3 * self.cfg.workers:
                # Dying before it could load, or again and again, is a bug to report, not a fault to absorb.
                raise RolloutError(f"rollout worker {wid} exited with code {w['proc'].exitcode} "
                                   f"({'too many replacements' if w['ready'] else 'before it was ready'}); "
                                   "under the 'spawn' start method the calling script needs an "
                                   "`if __name__ == \"__main__\":` guard")
            w["outbox"].cancel_join_thread()
            w["inbox"].cancel_join_thread()
            del self.workers[wid]
            self.log.workers_replaced += 1
            now = time.time()
            self.event(f"worker {wid}", "killed", now, now + 0.05)
            lost = [(tid, g) for tid, (owner, g) in self.assigned.items() if owner == wid]
            self.spawn()
            for tid, g in lost:
                del self.assigned[tid]
                self.dispatch(g)

    def send_weights(self, wid: int | None = None, *, full: bool = False) -> None:
        """Send the trainer's weights (version = step) to one worker or all, as the config's sync kind."""
        t1 = time.time()
        kind = self.cfg.sync_kind
        state = self.payload("adapter" if kind == "adapter" else ("full" if full else kind))
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        targets = [wid] if wid is not None else list(self.workers)
        for w in targets:
            self.workers[w]["inbox"].put(("weights", self.step, "adapter" if kind == "adapter" else "base",
                                          state, nbytes))
        if wid is None:
            self.version_sent = self.step
            self.log.syncs.append({"version": self.step, "kind": kind, "bytes": nbytes, "tensors": len(state),
                                   "trainer_s": time.time() - t1, "worker_s": []})
        self.event("trainer", "sync", t1, time.time(), version=self.step, bytes=nbytes)

    @torch.no_grad()
    def payload(self, kind: str) -> dict[str, torch.Tensor]:
        """Tensors to send: the adapter's, every base weight (LoRA merged in), or only those that changed."""
        if kind == "adapter":
            from peft import get_peft_model_state_dict

            return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        weights = merged_weights(self.model)
        if kind == "delta":
            changed = {k: v for k, v in weights.items()
                       if k not in self.last_sent or not torch.equal(v, self.last_sent[k])}
            self.last_sent.update(changed)
            return changed
        # A full payload leaves last_sent alone: under "delta" it only seeds a replacement worker.
        return weights

    # -- dispatch and receive -------------------------------------------------------------------------------

    def ahead(self) -> int:
        """Groups produced or promised but not yet consumed."""
        return len(self.ready) + len(self.parked) + len(self.assigned)

    def new_group(self) -> Group:
        row = self.train_rows[self.next_group % len(self.train_rows)]
        g = self.cfg.group_size
        group = Group(self.next_group, row["prompt"], row["answer"], row["ids"], [[] for _ in range(g)],
                      [[] for _ in range(g)], [[] for _ in range(g)], [False] * g)
        self.next_group += 1
        return group

    def dispatch(self, group: Group, wid: int | None = None) -> None:
        if wid is None:
            wid = min(self.workers, key=lambda w: self.workers[w]["load"])
        tid = self.next_task
        self.next_task += 1
        self.assigned[tid] = (wid, group)
        self.live_task_of_group[group.group_id] = tid
        self.workers[wid]["load"] += 1
        self.workers[wid]["inbox"].put(("task", tid, group))

    def fill(self, limit: int | None = None) -> None:
        """Hand out parked groups (once a newer version exists) and new ones, within the staleness rule."""
        cfg = self.cfg
        per_step = cfg.prompts_per_step
        idle = all(w["load"] == 0 for w in self.workers.values())
        for g in list(self.parked):
            if self.step - g.min_version > cfg.staleness:      # it could only be dropped later: drop it now
                self.parked.remove(g)
                self.log.dropped_stale += 1
            elif max(v for vs in g.versions for v in vs) < self.version_sent or idle:
                # Resume after a weight update; resume anyway when nothing else runs, or the run would stall.
                self.parked.remove(g)
                self.dispatch(g)
        # Keep each worker at most two tasks deep: one generating, one waiting, so it never idles.
        while sum(w["load"] for w in self.workers.values()) < 2 * len(self.workers):
            consumed = len(self.log.consumed)
            ahead = self.ahead()
            if consumed + ahead >= cfg.steps * per_step or (limit is not None and ahead >= limit):
                break
            intended_step = (consumed + ahead) // per_step
            if intended_step - self.version_sent > cfg.staleness:
                break
            self.dispatch(self.new_group())

    def receive(self, timeout: float) -> bool:
        """Handle one message from the workers; False when none came within `timeout`."""
        deadline = time.time() + timeout
        msg = None
        while msg is None:
            for w in list(self.workers.values()):
                try:
                    msg = w["outbox"].get_nowait()
                    break
                except queue.Empty:
                    continue
            if msg is None:
                if time.time() > deadline:
                    return False
                time.sleep(0.005)
        kind, wid = msg[0], msg[1]
        lane = f"worker {wid}"
        if kind == "error":
            raise RolloutError(f"rollout worker {wid} failed: {msg[2]}")
        if kind == "ready":
            self.event(lane, "load", msg[3], msg[4])
            if wid in self.workers:
                self.workers[wid]["ready"] = True
        elif kind == "synced":
            _, _, version, payload_kind, nbytes, t1, t2 = msg
            self.event(lane, "sync", t1, t2, version=version, bytes=nbytes)
            for s in self.log.syncs:
                if s["version"] == version:
                    s["worker_s"].append(t2 - t1)
        elif kind == "event":
            self.event(lane, msg[2], msg[3], msg[4])
        elif kind == "start":
            _, _, tid, version, _ = msg
            if tid == self.cfg.kill_worker_at_task and wid in self.workers:
                os.kill(self.workers[wid]["proc"].pid, signal.SIGKILL)
                self.workers[wid]["proc"].join(timeout=10)
        elif kind == "done":
            _, _, tid, version, t1, t2, group = msg
            if tid not in self.assigned or self.live_task_of_group.get(group.group_id) != tid:
                self.log.duplicates_ignored += 1    # a replaced worker's late answer: already re-dispatched
                return True
            del self.assigned[tid]
            if wid in self.workers:
                self.workers[wid]["load"] -= 1
            new_tokens = sum(len(t) for t in group.tokens)
            self.event(lane, "generate", t1, t2, version=version, group=group.group_id, tokens=new_tokens,
                       partial=not group.done())
            (self.ready if group.done() else self.parked).append(group)
        return True

    # -- training -------------------------------------------------------------------------------------------

    def take_batch(self) -> list[Group] | None:
        """P groups within the staleness bound, oldest first; staler ones are dropped for good."""
        for g in [g for g in self.ready if self.step - g.min_version > self.cfg.staleness]:
            self.ready.remove(g)
            self.log.dropped_stale += 1
        if len(self.ready) < self.cfg.prompts_per_step:
            return None
        self.ready.sort(key=lambda g: (g.min_version, g.group_id))
        batch, self.ready = self.ready[:self.cfg.prompts_per_step], self.ready[self.cfg.prompts_per_step:]
        return batch

    def train_step(self, batch: list[Group]) -> None:
        t1 = time.time()
        loss, metrics = policy_loss(self.model, batch, self.cfg.group_size,
                                    importance_sampling=self.cfg.importance_sampling, is_cap=self.cfg.is_cap)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t2 = time.time()
        rewards = [r for g in batch for r in g.rewards]
        self.log.steps.append({
            "step": self.step, "time": t2 - self.t0 - self.log.eval_s, "loss": loss.item(),
            "reward_mean": sum(rewards) / len(rewards), "lags": [self.step - g.min_version for g in batch],
            "versions": [g.version_mix for g in batch], "groups": [g.group_id for g in batch],
            "tokens": sum(len(t) for g in batch for t in g.tokens), **metrics})
        self.log.consumed += [g.group_id for g in batch]
        self.log.batches.append(batch)
        self.event("trainer", "train", t1, t2, step=self.step)
        self.step += 1

    @torch.no_grad()
    def evaluate(self) -> None:
        if not self.held_rows:
            return
        from labkit.infer.engine import SamplingParams
        from labkit.infer.hf import HFEngine
        from labkit.rewards.verifiable import correctness

        t1 = time.time()
        self.model.eval()
        outs = HFEngine(self.model, self.tok).generate([r["ids"] for r in self.held_rows],
                                                       SamplingParams(max_new_tokens=self.cfg.max_new_tokens))
        self.model.train()
        scores = correctness([r["prompt"] for r in self.held_rows], [o.text for o in outs],
                             answer=[r["answer"] for r in self.held_rows])
        t2 = time.time()
        self.log.eval_s += t2 - t1
        self.log.evals.append({"step": self.step, "time": t2 - self.t0 - self.log.eval_s,
                               "accuracy": sum(scores) / len(scores)})
        self.event("trainer", "eval", t1, t2, step=self.step)

    def set_sleep(self, asleep: bool) -> None:
        if asleep != self.sleeping:
            for w in self.workers.values():
                w["inbox"].put(("sleep" if asleep else "wake",))
            self.sleeping = asleep

    def wait_for(self, condition, what: str) -> None:
        deadline = time.time() + self.cfg.timeout_s
        while not condition():
            if self.receive(0.2):
                deadline = time.time() + self.cfg.timeout_s
            self.reap()
            if self.cfg.mode == "disaggregated":
                self.fill()
            if time.time() > deadline:
                raise RolloutError(f"no message from the rollout workers for {self.cfg.timeout_s:.0f} s "
                                   f"while waiting for {what}")

    # -- the two schedules ----------------------------------------------------------------------------------

    def run(self) -> RunLog:
        from tqdm.auto import tqdm

        cfg = self.cfg
        for _ in range(cfg.workers):
            self.spawn()
        self.evaluate()
        bar = tqdm(total=cfg.steps, desc=f"async GRPO ({cfg.mode}, staleness {cfg.staleness})",
                   disable=not self.progress, leave=False)
        try:
            while self.step < cfg.steps:
                if cfg.mode == "collocated":
                    self.collocated_round()
                else:
                    self.wait_for(lambda: self._batch_ready(), "a batch of rollouts")
                    batch = self.take_batch()
                    if batch is not None:
                        self.after_step(batch)
                bar.update(self.step - bar.n)
            if not self.log.evals or self.log.evals[-1]["step"] != self.step:
                self.evaluate()
        finally:
            bar.close()
            self.close()
        self.log.wall_s = time.time() - self.t0
        self.log.final_trainable = trainable_state(self.model)
        return self.log

    def _batch_ready(self) -> bool:
        for g in [g for g in self.ready if self.step - g.min_version > self.cfg.staleness]:
            self.ready.remove(g)
            self.log.dropped_stale += 1
        return len(self.ready) >= self.cfg.prompts_per_step

    def after_step(self, batch: list[Group]) -> None:
        self.train_step(batch)
        if self.step % self.cfg.sync_every == 0 or self.step == self.cfg.steps:
            if self.step < self.cfg.steps:
                self.send_weights()
        if self.cfg.eval_every and self.step % self.cfg.eval_every == 0 and self.step < self.cfg.steps:
            self.evaluate()

    def collocated_round(self) -> None:
        """Generate one round with the pool awake, then sleep it and train `sync_every` steps."""
        cfg = self.cfg
        want = cfg.prompts_per_step * min(cfg.sync_every, cfg.steps - self.step)
        self.set_sleep(False)
        # Hand out the round: parked groups resume first (a newer version exists), then new ones.
        for g in list(self.parked):
            self.parked.remove(g)
            self.dispatch(g)
        while len(self.ready) + len(self.assigned) < want:
            self.dispatch(self.new_group())
        self.wait_for(lambda: not self.assigned, "the round's rollouts")
        self.set_sleep(True)
        before = self.step
        for _ in range(cfg.sync_every):
            batch = self.take_batch()
            if batch is None or self.step >= cfg.steps:
                break
            self.train_step(batch)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self.evaluate()
        if before < self.step < cfg.steps:
            self.send_weights()

    def close(self) -> None:
        for w in self.workers.values():
            try:
                w["inbox"].put(("stop",))
            except (OSError, ValueError):
                pass
        for w in self.workers.values():
            w["proc"].join(timeout=10)
            if w["proc"].is_alive():
                w["proc"].kill()
            w["outbox"].cancel_join_thread()
        if self.adapter_dir:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)


@torch.no_grad()
def merged_weights(model) -> dict[str, torch.Tensor]:
    """Every base weight under its plain transformers name, LoRA deltas merged in (copies, not views).

    Merged weights keep the base's dtype, which is what an engine holds: under bf16 a LoRA update smaller
    than bf16's resolution (about 0.4% of the weight) disappears in the merge, so a delta sync can be empty.
    """
    if not hasattr(model, "get_base_model"):
        return {n: p.detach().clone() for n, p in model.named_parameters()}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {f"{n}.weight": m.get_delta_weight(m.active_adapters[0])
              for n, m in base.named_modules() if isinstance(m, LoraLayer)}
    out = {}
    for name, p in base.named_parameters():
        if ".lora_" in name:
            continue
        plain = name.replace(".base_layer.", ".")
        out[plain] = (p + deltas[plain]).to(p.dtype) if plain in deltas else p.detach().clone()
    return out


def run(cfg: AsyncRLConfig, *, progress: bool = True) -> RunLog:
    """One asynchronous GRPO run; returns its RunLog (steps, syncs, evals, events)."""
    return _Run(cfg, progress).run()


def sweep(cfg: AsyncRLConfig, staleness: Sequence[int] = (0, 1, 2, 4, 8), *,
          progress: bool = True) -> list[RunLog]:
    """The same run at each staleness bound (sync every step), for throughput against learning."""
    return [run(cfg.replace(staleness=s), progress=progress) for s in staleness]
