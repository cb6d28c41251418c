"""The engine interface every labkit inference engine follows: sampling settings, completions, errors.

An engine turns prompts (text or token ids) into completions with token ids, text, per-token log-probs
and a finish reason. Two engines implement it: `HFEngine` (transformers in this process) and
`VLLMEngine` (a vLLM server process on loopback). Code that only needs completions takes an `Engine`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from labkit.errors import ConfigError, LabkitError

Prompt = str | Sequence[int]


class EngineError(LabkitError):
    """An engine could not start, answer or change its weights; the message says what to do."""


class UnsupportedError(EngineError):
    """The engine has no way to do this (e.g. sleep mode on CPU)."""


@dataclasses.dataclass
class SamplingParams:
    """How to sample: the fields both engines understand, with the same meaning in each."""

    temperature: float = 0.0      # 0 means greedy (argmax); otherwise logits are divided by it
    top_p: float = 1.0            # nucleus sampling: keep the smallest set of tokens with this much mass
    top_k: int = 0                # keep the k most likely tokens; 0 turns it off
    max_new_tokens: int = 64      # completion length limit (finish_reason "length" when reached)
    seed: int | None = None       # makes sampled outputs repeatable within one engine
    n: int = 1                    # completions per prompt, returned next to each other
    logprobs: bool = False        # return log p(token) for each generated token, from the raw logits
    ignore_eos: bool = False      # keep going past EOS (benchmarks want fixed-length outputs)

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0 (0 = greedy), got {self.temperature}",
                              config="SamplingParams")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}", config="SamplingParams")
        if self.top_k < 0:
            raise ConfigError("top_k", f"must be >= 0 (0 = off), got {self.top_k}", config="SamplingParams")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}",
                              config="SamplingParams")
        if self.n < 1:
            raise ConfigError("n", f"must be >= 1, got {self.n}", config="SamplingParams")

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: argmax decoding, and top_p, top_k and seed do not matter."""
        return self.temperature == 0.0


@dataclasses.dataclass
class Completion:
    """One generated continuation of one prompt."""

    prompt_index: int                 # which prompt of the call it continues
    token_ids: list[int]              # generated tokens, EOS included when it stopped there
    text: str                         # decoded completion, special tokens removed
    finish_reason: str                # "stop" (EOS) or "length" (max_new_tokens)
    logprobs: list[float] | None = None   # log p(token_t | prefix) per generated token, when asked for
    adapter: str | None = None        # the LoRA adapter that produced it; None for the base model

    @property
    def num_tokens(self) -> int:
        """Generated tokens, EOS included when it stopped there."""
        return len(self.token_ids)


@runtime_checkable
class Engine(Protocol):
    """What labkit asks of an inference engine. `adapter` picks a loaded LoRA per call or per prompt."""

    name: str

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams | None = None, *,
                 adapter: str | None | Sequence[str | None] = None) -> list[Completion]:
        """sampling.n completions per prompt, in prompt order; `adapter`: one name, None or one per prompt."""
        ...

    def load_adapter(self, name: str, path: str) -> None:
        """Load a saved PEFT LoRA adapter under `name`, for later calls to pick with adapter=name."""
        ...

    def update_weights(self, state_dict: Mapping[str, Any] | None = None, *, adapter: str | None = None,
                       path: str | None = None) -> float:
        """Refit the running engine in place, no restart: new base weights (`state_dict`), or a loaded
        adapter's new weights (`adapter` with `path`, or with its PEFT `state_dict`); returns the seconds."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory between calls (UnsupportedError where the engine cannot)."""
        ...

    def wake(self) -> None:
        """Undo `sleep`, ready to generate again."""
        ...

    def close(self) -> None:
        """Release the engine's model, memory and any process it started."""
        ...


def per_prompt_adapters(prompts: Sequence[Prompt], adapter: str | None | Sequence[str | None],
                        known: set[str]) -> list[str | None]:
    """Spread an `adapter` argument (one name, None, or one per prompt) over the prompts; check the names."""
    if adapter is None or isinstance(adapter, str):
        names = [adapter] * len(prompts)
    else:
        names = list(adapter)
        if len(names) != len(prompts):
            raise ConfigError("adapter", f"got {len(names)} adapter names for {len(prompts)} prompts")
    for name in set(names) - {None}:
        if name not in known:
            raise EngineError(f"adapter '{name}' is not loaded; loaded: {sorted(known) or 'none'}. "
                              f"Call engine.load_adapter('{name}', path) first.")
    return names


def finish_reason(token_ids: list[int], eos_id: int | None, ignore_eos: bool) -> str:
    """'stop' when generation ended on EOS, else 'length'."""
    return "stop" if (not ignore_eos and eos_id is not None and token_ids and token_ids[-1] == eos_id) \
        else "length"
