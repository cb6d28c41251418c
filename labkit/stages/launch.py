"""Run a training stage in several processes through `accelerate launch` (DDP), or in this one.

    labkit launch --processes 2 sft --preset cpu-smoke --set max_steps=4
    # = accelerate launch --multi_gpu --num_processes 2 ... -m labkit.stages.launch sft --preset cpu-smoke ...

Each process runs the same `train(cfg)`; TRL's trainers (through accelerate) wrap the model in
DistributedDataParallel, give each rank its share of every global batch and average the gradients. labkit's
own writers run on rank 0 only (labkit.dist.is_main): manifest, status and lineage (labkit.runs.ranks), the
metrics JSONL, console and dashboard callbacks and held-out evals (labkit.stages.common.run_callbacks /
held_out), the rollout log and the saved adapter. The other ranks print nothing.

The global batch is `batch_size × grad_accum × processes`: to compare a run on N processes with a run on one,
divide batch_size by N. On a machine without a GPU the processes join over gloo; with GPUs, one process per
GPU over NCCL (`--gpu`), or several processes sharing one GPU over gloo to try the path on one card.
PPO (labkit's own loop) and rejection sampling (whose rounds sample in every process) run in one process only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import socket
import subprocess
import sys
import typing
from typing import Any

from labkit.config import Config, PreferenceConfig, ReasoningConfig, RewardConfig, RLConfig, SFTConfig
from labkit.errors import ConfigError

# stage name → (its config class, the module whose train(cfg) runs it, whether it may run in >1 process)
STAGES: dict[str, tuple[type[Config], str, bool]] = {
    "sft": (SFTConfig, "labkit.stages.sft", True),
    "reward": (RewardConfig, "labkit.stages.reward", True),
    "dpo": (PreferenceConfig, "labkit.stages.preference", True),
    "preference": (PreferenceConfig, "labkit.stages.preference", True),
    "grpo": (RLConfig, "labkit.stages.grpo", True),
    "rloo": (RLConfig, "labkit.stages.rloo", True),
    "ppo": (RLConfig, "labkit.stages.ppo", False),
    "rejection": (ReasoningConfig, "labkit.stages.rejection", False),
}


def _coerce(cls: type[Config], key: str, text: str) -> Any:
    """A `--set key=value` value as the field's type (ConfigError for an unknown field or a bad value)."""
    hints = typing.get_type_hints(cls)
    if key not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(key, f"unknown field; `python -c 'import labkit.config as c; print(c.{cls.__name__}"
                          ".help())'` lists them", config=cls.__name__)
    kinds = [a for a in typing.get_args(hints[key]) if a is not type(None)] or [hints[key]]
    if text.lower() in ("none", "null") and type(None) in typing.get_args(hints[key]):
        return None
    for kind in kinds:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return text.lower() in ("1", "true", "yes", "on")
        elif kind in (int, float):
            with contextlib.suppress(ValueError):
                return kind(text)
        elif kind is str:
            return text
    name = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ConfigError(key, f"cannot read {text!r} as {name}", config=cls.__name__)


def build_config(stage: str, preset: str, sets: list[str]) -> Config:
    """The stage's config under `preset` with `key=value` overrides, validated (ConfigError names a field)."""
    if stage not in STAGES:
        raise ConfigError("stage", f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    cls = STAGES[stage][0]
    overrides = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(item, "expected key=value", config=cls.__name__)
        overrides[key.strip()] = _coerce(cls, key.strip(), value.strip())
    return cls.from_preset(preset, **overrides)


def free_port() -> int:
    """A free TCP port on loopback for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(stage: str, *, processes: int = 2, preset: str = "cpu-smoke", sets: list[str] = (),
                   learned_reward: str = "", gpu: bool = False, config_file: str = "",
                   port: int | None = None) -> list[str]:
    """The `accelerate launch` command line that runs `stage` in `processes` processes.

    gpu: one process per GPU over NCCL (else: processes join over gloo, on the CPU, or sharing one GPU).
    config_file: an accelerate config (configs/accelerate/*.yaml) instead of the flags built here.
    Checks the stage, the process count and the config before anything starts.
    """
    build_config(stage, preset, list(sets))  # a bad field fails here, not in N processes
    if processes < 1:
        raise ConfigError("processes", f"must be at least 1, got {processes}")
    if processes > 1 and not STAGES[stage][2]:
        raise ConfigError("processes", f"{stage} runs in one process only (its loop is not data-parallel); "
                          "use grpo or rloo for multi-process RL")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        cmd += ["--config_file", config_file, "--num_processes", str(processes)]
    else:
        # accelerate's CPU launcher needs mpirun for several processes; torchrun's (multi_gpu) does not, and
        # labkit.dist.init_distributed then forms a gloo group when there is no GPU.
        cmd += ["--multi_gpu" if processes > 1 else "--num_processes=1", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
        if processes > 1:
            cmd += ["--num_processes", str(processes)]
    cmd += ["--main_process_port", str(port or free_port()), "-m", "labkit.stages.launch", stage,
            "--preset", preset]
    for item in sets:
        cmd += ["--set", item]
    if learned_reward:
        cmd += ["--learned-reward", learned_reward]
    if not gpu:
        cmd += ["--gloo"]
    return cmd


def launch(stage: str, *, processes: int = 2, preset: str = "cpu-smoke", sets: list[str] = (),
           learned_reward: str = "", gpu: bool = False, config_file: str = "",
           env: dict[str, str] | None = None) -> int:
    """Run `stage` in `processes` processes and wait; returns the exit code (0 when every rank finished)."""
    cmd = launch_command(stage, processes=processes, preset=preset, sets=list(sets),
                         learned_reward=learned_reward, gpu=gpu, config_file=config_file)
    run_env = {**os.environ, **(env or {})}
    run_env.setdefault("OMP_NUM_THREADS", "1")  # N processes on a few cores: do not oversubscribe them
    return subprocess.run(cmd, env=run_env).returncode


def run_stage(stage: str, cfg: Config, *, learned_reward: str = ""):
    """This process's share of a (possibly multi-process) run: `train(cfg)` of the stage's module."""
    module = importlib.import_module(STAGES[stage][1])
    if learned_reward:
        if not isinstance(cfg, RLConfig):
            raise ConfigError("learned_reward", f"{stage} takes no reward functions")
        from labkit.rewards import learned_reward as load_learned
        from labkit.stages.rl_common import build_rewards

        funcs = [*build_rewards(cfg), load_learned(learned_reward)]
        weights = cfg.reward_weights + ",1" if cfg.reward_weights else ""
        return module.train(cfg.replace(reward_weights=weights), reward_funcs=funcs)
    return module.train(cfg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of each launched process: `python -m labkit.stages.launch STAGE --preset P --set k=v`."""
    from labkit.dist import is_main, world_size

    p = argparse.ArgumentParser(prog="python -m labkit.stages.launch", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("--preset", default="cpu-smoke")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--learned-reward", default="", 
                   help="RL: add the reward model in this reward-stage folder")
    p.add_argument("--gloo", action="store_true", 
                   help="join the processes over gloo (CPU, or one shared GPU)")
    args = p.parse_args(argv)
    cfg = build_config(args.stage, args.preset, args.sets)
    if args.gloo and world_size() > 1:
        from labkit.dist import init_distributed

        init_distributed(backend="gloo")
    quiet = contextlib.redirect_stdout(open(os.devnull, "w")) if not is_main() else contextlib.nullcontext()
    with quiet:  # rank 0 speaks for the run
        result = run_stage(args.stage, cfg, learned_reward=args.learned_reward)
    if is_main():
        m = result.metrics
        print(f"{args.stage} on {world_size()} process(es): {m.get('steps')} steps, train loss "
              f"{m.get('train_loss')}; {result.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
