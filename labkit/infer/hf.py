"""The `hf` engine: transformers generation in this process, static or continuous batching, multi-LoRA.

Static batching left-pads a batch of prompts and decodes them in lock step (`model.generate`); continuous
batching (`model.generate_batch`, transformers' paged-attention scheduler) admits and retires requests
one token step at a time. Log-probs come from the raw logits, so they are the trainer's log-probs of the
same tokens (labkit.models.logprobs), not those of the temperature-scaled sampling distribution.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from labkit.errors import ConfigError
from labkit.infer.engine import (
    Completion,
    EngineError,
    Prompt,
    SamplingParams,
    finish_reason,
    per_prompt_adapters,
)

BATCHING = ("static", "continuous")


def encode_prompts(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt. Text is encoded as is (no BOS added): chat templates write their own."""
    out = []
    for i, p in enumerate(prompts):
        ids = (tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str)
               else [int(t) for t in p])
        if not ids:
            raise ConfigError("prompts", f"prompt {i} is empty")
        out.append(ids)
    return out


class HFEngine:
    """transformers generation behind the engine interface.

    `HFEngine(model, tokenizer)` wraps a loaded model; `HFEngine.from_name("smollm2-135m-instruct")`
    loads one. batch_size bounds a static batch; batching is "static" or "continuous" (generate_kwargs
    apply to static batching only).
    """

    name = "hf"

    def __init__(self, model, tokenizer, *, batch_size: int = 32, batching: str = "static",
                 generate_kwargs: dict[str, Any] | None = None):
        if batching not in BATCHING:
            raise ConfigError("batching", f"must be one of {BATCHING}, got {batching!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.batching = batching
        # Extra `model.generate` arguments, e.g. speculative decoding: {"prompt_lookup_num_tokens": 3} or
        # {"assistant_model": draft} (transformers runs assisted decoding at batch size 1 only).
        self.generate_kwargs = dict(generate_kwargs or {})
        self.adapters: dict[str, str] = {}
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self._sleeping_on: torch.device | None = None

    @classmethod
    def from_name(cls, name: str, *, device: str = "auto", dtype: str | torch.dtype = "auto", **kwargs: Any):
        """Load a labkit model name (embedded default, local dir or hub id) and wrap it."""
        from labkit.models import load_model

        model, tok = load_model(name, device=device, dtype=dtype)
        return cls(model, tok, **kwargs)

    # -- generation ---------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams | None = None, *,
                 adapter: str | None | Sequence[str | None] = None) -> list[Completion]:
        """Complete every prompt `sampling.n` times; results come back in prompt order, n per prompt."""
        sampling = sampling or SamplingParams()
        self._check_awake()
        ids = encode_prompts(self.tokenizer, prompts)
        names = per_prompt_adapters(prompts, adapter, set(self.adapters))
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        # One request per (prompt, sample); each adapter's requests run as their own batches.
        requests = [(i, k) for i in range(len(ids)) for k in range(sampling.n)]
        results: dict[tuple[int, int], Completion] = {}
        for name in dict.fromkeys(names):
            group = [r for r in requests if names[r[0]] == name]
            with self._adapter(name):
                run = self._continuous if self.batching == "continuous" else self._static
                for (i, k), (toks, lps) in zip(group, run([ids[i] for i, _ in group], sampling)):
                    results[(i, k)] = self._completion(i, toks, lps, sampling, name)
        return [results[r] for r in requests]

    def _completion(self, index: int, toks: list[int], lps: list[float] | None, sampling: SamplingParams,
                    adapter: str | None) -> Completion:
        if not sampling.ignore_eos and self.eos_id in toks:
            cut = toks.index(self.eos_id) + 1
            toks, lps = toks[:cut], (lps[:cut] if lps is not None else None)
        return Completion(index, toks, self.tokenizer.decode(toks, skip_special_tokens=True),
                          finish_reason(toks, self.eos_id, sampling.ignore_eos),
                          lps if sampling.logprobs else None, adapter)

    def _gen_kwargs(self, sampling: SamplingParams) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": not sampling.greedy,
                              "pad_token_id": self.pad_id,
                              "eos_token_id": None if sampling.ignore_eos else self.eos_id}
        if not sampling.greedy:
            kw.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        return kw

    def _static(self, prompts: list[list[int]], sampling: SamplingParams):
        """Left-padded batches through `model.generate`; yields (tokens, log-probs) in input order."""
        # Batching prompts of similar length wastes less compute on padding.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[tuple[list[int], list[float] | None]] = [([], None)] * len(prompts)
        device = self.model.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(prompts[i]) for i in idx)
            input_ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)     # [B, T]
            attn = torch.zeros_like(input_ids)                                           # [B, T]
            for row, i in enumerate(idx):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                attn[row, width - len(prompts[i]):] = 1
            res = self.model.generate(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                                      output_logits=sampling.logprobs, return_dict_in_generate=True,
                                      **self._gen_kwargs(sampling), **self.generate_kwargs)
            new = res.sequences[:, width:].cpu()                                         # [B, T_new]
            lps = None
            if sampling.logprobs:
                logits = torch.stack(res.logits, dim=1).float().cpu()                    # [B, T_new, V]
                picked = logits.gather(-1, new.unsqueeze(-1)).squeeze(-1)               # [B, T_new]
                lps = (picked - torch.logsumexp(logits, dim=-1)).tolist()                # [B, T_new]
            for row, i in enumerate(idx):
                out[i] = (new[row].tolist(), lps[row] if lps is not None else None)
        return out

    def _continuous(self, prompts: list[list[int]], sampling: SamplingParams):
        """transformers' continuous batching (`generate_batch`); yields (tokens, log-probs) in input order."""
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gen_kw = self._gen_kwargs(sampling)
        if gen_kw["eos_token_id"] is None:
            gen_kw["eos_token_id"] = -1  # its "no EOS" value
        longest = max(map(len, prompts)) + sampling.max_new_tokens
        page = 64
        # On CPU the scheduler would size its KV cache from free memory; size it from the workload instead.
        blocks = len(prompts) * -(-longest // page) + 4
        cb = ContinuousBatchingConfig(page_size=page, num_blocks=blocks, max_batch_tokens=max(512, longest),
                                      return_logprobs=sampling.logprobs, use_cuda_graph=False,
                                      seed=sampling.seed)
        res = self.model.generate_batch(prompts, generation_config=GenerationConfig(**gen_kw),
                                        continuous_batching_config=cb, warmup=False)
        outs = list(res.values())
        if len(outs) != len(prompts) or any(o.error for o in outs):
            errors = [o.error for o in outs if o.error]
            raise EngineError(f"continuous batching returned {len(outs)} of {len(prompts)} results; "
                              f"errors: {errors[:3]}")
        return [(list(o.generated_tokens), list(o.logprobs) if sampling.logprobs else None) for o in outs]

    # -- adapters and weights -----------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Load a saved PEFT LoRA adapter under `name`; later calls pick it with adapter=name."""
        from peft import PeftModel

        if name in self.adapters:
            self.model.delete_adapter(name)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()
        self.adapters[name] = str(path)

    @contextlib.contextmanager
    def _adapter(self, name: str | None):
        if not self.adapters:
            yield
        elif name is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(name)
            yield

    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | None = None, *,
                       adapter: str | None = None, path: str | os.PathLike | None = None) -> float:
        """Refit the engine in place; returns the seconds it took.

        - state_dict only: new base-model weights (names as in the plain model's state_dict; a subset is
          fine);
        - adapter + path: reload that adapter from a saved directory;
        - adapter + state_dict: new LoRA weights for that adapter (PEFT's adapter state-dict names).
        """
        t0 = time.perf_counter()
        if adapter is not None:
            if path is not None:
                self.load_adapter(adapter, path)
            elif state_dict is not None:
                from peft import set_peft_model_state_dict

                if adapter not in self.adapters:
                    raise EngineError(f"adapter '{adapter}' is not loaded; load it before refitting it")
                set_peft_model_state_dict(self.model, dict(state_dict), adapter_name=adapter)
            else:
                raise ConfigError("update_weights", "pass path= or state_dict= with adapter=")
        elif state_dict is not None:
            self._load_base_weights(state_dict)
        else:
            raise ConfigError("update_weights", "pass a state_dict, or adapter= with path= or state_dict=")
        return time.perf_counter() - t0

    @torch.no_grad()
    def _load_base_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # Under PEFT a wrapped linear keeps its weight as `<name>.base_layer.weight`: map plain names onto it.
        params = {n.replace(".base_layer.", "."): p for n, p in base.state_dict(keep_vars=True).items()
                  if ".lora_" not in n}
        unknown = [k for k in state_dict if k not in params]
        if unknown:
            raise EngineError(f"update_weights: {len(unknown)} names are not weights of this model, "
                              f"e.g. {unknown[:3]}")
        for k, v in state_dict.items():
            params[k].data.copy_(v.to(params[k].device, params[k].dtype))

    # -- lifecycle ----------------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free accelerator memory by moving the weights to the CPU (a no-op for a model already there)."""
        if self._sleeping_on is None:
            self._sleeping_on = self.model.device
            if self.model.device.type != "cpu":
                self.model.to("cpu")
                getattr(torch, self._sleeping_on.type).empty_cache()

    def wake(self) -> None:
        """Undo sleep(): weights back on the device they came from."""
        if self._sleeping_on is not None:
            self.model.to(self._sleeping_on)
            self._sleeping_on = None

    def _check_awake(self) -> None:
        if self._sleeping_on is not None and self._sleeping_on.type != "cpu":
            raise EngineError("the hf engine is asleep: call engine.wake() before generate()")

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
