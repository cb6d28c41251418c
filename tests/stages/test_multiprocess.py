"""Stages under `accelerate launch` with 2 CPU processes over gloo (tiny model): SFT matches one process at
the same global batch, only rank 0 writes files, DPO and GRPO run; and the launcher's checks."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from labkit.config import SFTConfig
from labkit.errors import ConfigError
from labkit.runs.callbacks import read_jsonl
from labkit.stages.launch import build_config, launch, launch_command

pytestmark = pytest.mark.smoke

AUDIT_SITE = pathlib.Path(__file__).parent / "multiproc"   # its sitecustomize.py records each rank's writes
# Two processes see the same global batch in the same order as one process, and DDP averages their gradients:
# the logged losses agree to float32 round-off (measured: within 1e-5 over 4 steps). Allow 1e-3 relative.
LOSS_RTOL = 1e-3


def launched(stage: str, sets: list[str], tmp: pathlib.Path, processes: int = 2) -> dict[int, list[str]]:
    """Run `stage` in `processes` processes; the paths each rank wrote, by rank."""
    audit = tmp / "audit"
    audit.mkdir(exist_ok=True)
    env = {"PYTHONPATH": os.pathsep.join([str(AUDIT_SITE), os.environ.get("PYTHONPATH", "")]),
           "LABKIT_WRITE_AUDIT": str(audit), "LABKIT_REGISTRY": str(tmp / "registry.sqlite")}
    assert launch(stage, processes=processes, sets=sets, env=env) == 0
    return {int(p.stem.removeprefix("rank")): json.loads(p.read_text()) for p in audit.glob("rank*.json")}


def under(paths: list[str], folder: pathlib.Path) -> list[str]:
    return [p for p in paths if pathlib.Path(p).is_relative_to(folder)]


def steps_logged(run: pathlib.Path) -> list[int]:
    return [e["step"] for e in read_jsonl(run / "metrics.jsonl") if e["event"] == "step"]


SFT = ["dtype=float32", "n_eval=2", "learning_rate=0.01", "max_steps=4", "warmup_ratio=0"]


@pytest.fixture(scope="module")
def sft_two(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft2")
    writes = launched("sft", [f"model={tiny_model_dir}", f"output_dir={tmp / 'run'}", "batch_size=2", *SFT],
                      tmp)
    return tmp, writes


def test_sft_on_two_processes_matches_one_at_the_same_global_batch(sft_two, tiny_model_dir, tmp_path):
    from labkit.stages import sft

    tmp, _ = sft_two
    cfg = build_config("sft", "cpu-smoke", [f"model={tiny_model_dir}", f"output_dir={tmp_path / 'one'}",
                                            "batch_size=4", *SFT])
    assert isinstance(cfg, SFTConfig)
    one = sft.train(cfg)
    loss = {e["step"]: e["loss"] for e in read_jsonl(one.log_path) if e["event"] == "step"}
    two = {e["step"]: e["loss"] for e in read_jsonl(tmp / "run" / "metrics.jsonl") if e["event"] == "step"}
    assert sorted(two) == sorted(loss) == [1, 2, 3, 4]   # one log line per step, not one per rank
    assert loss[4] < loss[1]                              # it learned, so the comparison is not of constants
    for step in loss:
        assert two[step] == pytest.approx(loss[step], rel=LOSS_RTOL), step
    # the two ranks' trained tokens add up to the single process's
    result = json.loads((tmp / "run" / "result.json").read_text())
    assert result["metrics"]["telemetry"]["tokens_trained"] == one.metrics["telemetry"]["tokens_trained"]


def test_only_rank_zero_writes_files(sft_two):
    tmp, writes = sft_two
    assert set(writes) == {0, 1}
    run, registry = tmp / "run", tmp / "registry.sqlite"
    assert under(writes[1], run) == []
    assert not [p for p in writes[1] if p.startswith(str(registry))]   # the lineage store (and its -wal)
    assert [p for p in writes[0] if p.startswith(str(registry))]
    mine = {pathlib.Path(p).relative_to(run).parts[0] for p in under(writes[0], run)
            if pathlib.Path(p) != run}
    assert {"manifest.json", "metrics.jsonl", "status.json", "result.json", "adapter"} <= mine
    assert (run / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("stage, sets", [
    ("dpo", ["batch_size=2", "max_steps=2", "n_eval=2", "kl_prompts=0", "warmup_ratio=0"]),
    ("grpo", ["max_steps=2", "prompts_per_step=2", "num_generations=2", "max_completion_length=6",
              "n_eval=2", "eval_max_new_tokens=6", "preflight=false", "reward_weights=", "rewards=length"]),
])
def test_preference_and_rl_stages_run_on_two_processes(stage, sets, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    writes = launched(stage, [f"model={tiny_model_dir}", f"output_dir={run}", "dtype=float32", *sets],
                      tmp_path)
    assert steps_logged(run) == [1, 2]
    result = json.loads((run / "result.json").read_text())
    assert result["metrics"]["steps"] == 2 and result["metrics"]["run"]["status"] == "done"
    assert under(writes[1], run) == [] and under(writes[0], run)


def test_launcher_checks_before_starting_anything(tiny_model_dir):
    with pytest.raises(ConfigError, match="one process only"):
        launch_command("ppo", processes=2, sets=[f"model={tiny_model_dir}"])
    with pytest.raises(ConfigError, match="unknown field"):
        launch_command("sft", sets=["batch=3"])
    with pytest.raises(ConfigError, match="cannot read .three. as int"):
        launch_command("sft", sets=["batch_size=three"])
    with pytest.raises(ConfigError, match="stage"):
        launch_command("pretrain")
    cmd = launch_command("grpo", processes=2, sets=["beta=0.1", "preflight=false"], port=29999)
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--main_process_port" in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "labkit.stages.launch" and "--gloo" in cmd
    cfg = build_config("grpo", "cpu-smoke", ["beta=0.1", "preflight=false", "kl_target=none",
                                              "reward_weights="])
    assert (cfg.beta, cfg.preflight, cfg.kl_target, cfg.reward_weights) == (0.1, False, None, "")


def test_ppo_refuses_to_run_as_one_of_several_processes(monkeypatch, tiny_model_dir, tmp_path):
    from labkit.config import RLConfig
    from labkit.stages import ppo

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="one process only"):
        ppo.train(RLConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "p")))
    assert not (tmp_path / "p").exists()


def test_rank_helpers_read_the_launcher_environment(monkeypatch):
    from labkit import dist

    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.broadcast_from_main({"a": 1}) == {"a": 1} and dist.any_rank(True) is True
    assert dist.sum_across_ranks([1.0, 2.0]) == [1.0, 2.0]
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (3, 4, False)
