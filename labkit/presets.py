"""Named presets: the size dial of every config, so notebooks never branch on a smoke flag.

    cpu-smoke   seconds per stage on a CPU; what CI and papermill smoke runs use
    cpu         real but small runs on the embedded model on a laptop CPU (minutes)
    gpu-0.5b-qlora  one consumer GPU, a 0.5B model with 4-bit QLoRA
"""

from __future__ import annotations

from typing import Any

from labkit.errors import ConfigError

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-smoke": {
        "SetupConfig": {"max_new_tokens": 24, "n_baseline_prompts": 3},
    },
    "cpu": {
        "SetupConfig": {"max_new_tokens": 64, "n_baseline_prompts": 6},
    },
    "gpu-0.5b-qlora": {
        "SetupConfig": {"max_new_tokens": 128, "n_baseline_prompts": 8},
    },
}


def preset_values(config_name: str, preset: str) -> dict[str, Any]:
    """The overrides a preset sets for one config class (empty when it leaves that config alone)."""
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[preset].get(config_name, {}))
