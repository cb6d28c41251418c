"""Named presets: the size dial of every config, so notebooks never branch on a smoke flag.

    cpu-smoke   seconds per stage on a CPU; what CI and papermill smoke runs use
    cpu         real but small runs on the embedded model on a laptop CPU (minutes)
    cpu-tour    `cpu` with shorter runs, so `labkit tour` (every stage back to back) fits in 20 minutes
    gpu-qlora   one consumer GPU (8–24 GB): 4-bit QLoRA, longer runs; pass model= for a 0.5–3B model
"""

from __future__ import annotations

from typing import Any

from labkit.errors import ConfigError

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-smoke": {
        "SetupConfig": {"max_new_tokens": 24, "n_baseline_prompts": 3},
        "SFTConfig": {"max_steps": 4, "batch_size": 4, "n_eval": 8, "eval_max_new_tokens": 16},
        "RewardConfig": {"max_steps": 3, "batch_size": 4, "n_eval": 16},
        "PreferenceConfig": {"max_steps": 2, "batch_size": 2, "n_eval": 8, "precompute_ref": False,
                             "kl_prompts": 2, "kl_samples": 1, "kl_max_new_tokens": 8},
        "BestOfNConfig": {"prompts": 4, "n": 4, "max_new_tokens": 24},
        "RLConfig": {"max_steps": 2, "prompts_per_step": 2, "num_generations": 4, "n_eval": 8,
                     "probe_prompts": 2},
        "ReasoningConfig": {"rounds": 1, "prompts_per_round": 8, "k": 2, "max_new_tokens": 24, "sft_steps": 2,
                            "batch_size": 4, "n_eval": 8},
        "EvalConfig": {"limit": 8, "source": "fixture", "max_new_tokens": 96, "humaneval_max_new_tokens": 128,
                       "needle_lengths": "128,256", "needle_depths": "0.5", "bootstrap": 200,
                       "samples_per_task": 3},
        "InferenceConfig": {"n_prompts": 2, "max_new_tokens": 12, "requests": 4, "batch_size": 2,
                            "short_budget": "2,4", "long_budget": "8,12", "spec_tokens": 12,
                            "draft_layers": "4", "quant_variants": "fp32,bf16,int8,nf4,gguf",
                            "quant_tokens": 6, "ppl_rows": 3, "mmlu_items": 2, "invariance_sizes": "1,2,4",
                            "rl_steps": 1, "rl_tokens": 24, "rl_eval": 0},
        "AsyncRLConfig": {"dtype": "bfloat16", "steps": 2, "prompts_per_step": 1, "group_size": 4,
                          "max_new_tokens": 8, "n_eval": 0},
    },
    "cpu": {
        "SetupConfig": {"max_new_tokens": 64, "n_baseline_prompts": 6},
        "SFTConfig": {"max_steps": 60, "batch_size": 8, "n_eval": 50},
        "RewardConfig": {"max_steps": 60, "batch_size": 8, "n_eval": 80},
        "PreferenceConfig": {"max_steps": 40, "batch_size": 8, "n_eval": 80},
        "RLConfig": {"max_steps": 60, "prompts_per_step": 4, "num_generations": 8, "n_eval": 50},
        "ReasoningConfig": {"rounds": 3, "prompts_per_round": 64, "k": 4, "sft_steps": 20, "n_eval": 50},
        "EvalConfig": {"limit": 40, "max_new_tokens": 128, "humaneval_max_new_tokens": 192},
        "InferenceConfig": {},   # its defaults are the cpu sizes; listed so cpu-tour's cuts apply
        "AsyncRLConfig": {"dtype": "bfloat16", "steps": 8, "prompts_per_step": 2, "group_size": 4,
                          "max_new_tokens": 24, "n_eval": 16, "eval_every": 4, "lr": 2e-4},
    },
    "gpu-qlora": {
        "SetupConfig": {"max_new_tokens": 128, "n_baseline_prompts": 8},
        "SFTConfig": {"method": "qlora", "max_steps": 300, "batch_size": 16, "max_length": 1024,
                      "gradient_checkpointing": True, "n_eval": 50, "lora_r": 32, "lora_alpha": 64},
        "RewardConfig": {"max_steps": 200, "batch_size": 16, "lora_r": 32, "lora_alpha": 64},
        "PreferenceConfig": {"max_steps": 200, "batch_size": 16, "lora_r": 32, "lora_alpha": 64,
                             "kl_prompts": 32},
        "RLConfig": {"max_steps": 300, "prompts_per_step": 8, "num_generations": 8,
                     "max_completion_length": 256,
                     "eval_max_new_tokens": 256, "length_budget": 160, "lora_r": 32, "lora_alpha": 64,
                     "learning_rate": 1e-4, "n_eval": 200},
        "ReasoningConfig": {"rounds": 4, "prompts_per_round": 200, "k": 8, "sft_steps": 60,
                            "max_new_tokens": 256,
                            "lora_r": 32, "lora_alpha": 64},
        "EvalConfig": {"limit": 500, "batch_size": 32, "max_new_tokens": 256, "humaneval_samples": 10,
                       "humaneval_k": "1,10", "humaneval_max_new_tokens": 384,
                       "needle_lengths": "1024,2048,4096,8192"},
        "InferenceConfig": {"dtype": "bfloat16", "n_prompts": 8, "max_new_tokens": 128, "requests": 64,
                            "batch_size": 16, "spec_tokens": 128, "mmlu_items": 200, "rl_steps": 4,
                            "rl_tokens": 128, "rl_eval": 50},
    },
}

# `labkit tour` runs every stage back to back and then notebook 00; these cuts keep the whole chain well
# within 20 minutes on a 2-core CPU. RL gets a wall-clock budget rather than a step count.
TOUR_CUTS: dict[str, dict[str, Any]] = {
    "SFTConfig": {"max_steps": 40},
    "RewardConfig": {"max_steps": 24},
    "PreferenceConfig": {"max_steps": 12},
    "RLConfig": {"max_steps": 200, "max_seconds": 180.0, "eval_every": 0},
    "EvalConfig": {"limit": 8, "source": "fixture", "max_new_tokens": 128, "humaneval_max_new_tokens": 160,
                   "needle_lengths": "256,512", "needle_depths": "0.25,0.75", "bootstrap": 500},
    # the serving stage: the adapters answer two held-out questions each
    "InferenceConfig": {"n_prompts": 2, "max_new_tokens": 24},
}
PRESETS["cpu-tour"] = {name: {**values, **TOUR_CUTS.get(name, {})} for name, values in PRESETS["cpu"].items()}


def preset_values(config_name: str, preset: str) -> dict[str, Any]:
    """The overrides a preset sets for one config class (empty when it leaves that config alone)."""
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[preset].get(config_name, {}))
