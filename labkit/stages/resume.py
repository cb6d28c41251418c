"""Resume a run from its folder: the stage and config come from its manifest, the weights, optimizer,
scheduler and RNG state from its last checkpoint (`labkit resume RUN`).

    result = resume("runs/01_sft")                 # continue an interrupted, failed or killed run
    result = resume("runs/01_sft", force=True)     # run a finished one again (the old folder moved aside)

A run that finished `done` is not run again unless forced. A run stopped by a budget resumes with the same
budget from its last checkpoint. A run without a checkpoint (none saved yet, or a stage that keeps none:
PPO, rejection sampling) starts over in the same folder, with the same manifest. When the code or data
changed since (the manifest built now differs), resume refuses and says so; with force the run starts
anew, the old folder moved aside. A run started with reward functions passed from Python (not labkit's
named rewards) cannot be resumed from its manifest: call the stage's train() again with the same
functions, which resumes it the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

from labkit.errors import LabkitError
from labkit.runs.manifest import RunDir
from labkit.runs.tracking import same_manifest_only

# stage name in the manifest → (module, train function, config class name in labkit.config)
STAGES: dict[str, tuple[str, str, str]] = {
    "sft": ("labkit.stages.sft", "train", "SFTConfig"),
    "reward": ("labkit.stages.reward", "train", "RewardConfig"),
    "preference": ("labkit.stages.preference", "train", "PreferenceConfig"),
    "grpo": ("labkit.stages.grpo", "train", "RLConfig"),
    "rloo": ("labkit.stages.rloo", "train", "RLConfig"),
    "ppo": ("labkit.stages.ppo", "train", "RLConfig"),
    "rejection_sampling": ("labkit.stages.rejection", "train", "ReasoningConfig"),
}


def resume(run: str | os.PathLike | RunDir, *, force: bool = False, callbacks=()) -> Any:
    """Continue the run in folder `run` with its own manifest; returns the stage's RunResult.

    Raises LabkitError for a folder without a manifest, an unknown stage, or custom reward functions.
    """
    import labkit.config as configs

    folder = run if isinstance(run, RunDir) else RunDir(run)
    manifest = folder.manifest()
    if manifest.stage not in STAGES:
        raise LabkitError(f"{folder.path}: cannot resume a {manifest.stage!r} run; resumable stages: "
                          f"{', '.join(STAGES)}")
    custom = [r["qualname"] for r in manifest.rewards if not str(r.get("qualname", "")).startswith("labkit.")]
    if custom:
        raise LabkitError(f"{folder.path} was trained with reward functions passed from Python "
                          f"({', '.join(custom)}): resume it by calling the stage's train() with them again")
    module, fn, config_name = STAGES[manifest.stage]
    config_cls = getattr(configs, config_name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in manifest.config.items() if k in known}
    cfg = config_cls.from_dict({**values, "output_dir": str(folder.path.resolve())})
    cfg._preset = manifest.preset
    extra = {k: v for k, v in manifest.config.items() if k not in known}
    train = getattr(importlib.import_module(module), fn)
    with same_manifest_only():  # code or data changed since: an error (or, forced, a fresh run), not a resume
        return train(cfg, callbacks, force=force, **extra)
