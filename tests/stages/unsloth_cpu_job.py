"""Labkit's stages through one training backend on CPU, in a process of its own; run by test_unsloth_cpu.py.

    python unsloth_cpu_job.py BACKEND MODEL_DIR OUT_DIR STAGES

BACKEND is peft or unsloth; STAGES a comma list of sft-lora, sft-qlora, dpo, grpo. Both backends run the very
same configs (tiny model, fp32, fixed seed), so their curves can be compared step by step. SFT asks for the
backend through SFTConfig.backend; the DPO and GRPO stages have no backend field, so they are forced onto it
by wrapping `load_for_training` (what the capability report says happens then is what this measures).

Prints one line `RESULT {json}`: per stage the backend it trained with, each step's loss and grad norm,
seconds, and how many times Unsloth's chunked cross-entropy ran (which shows SFT went through Unsloth's own
loss, not only under its name); with unsloth also the version and the device Unsloth chose.
"""

import json
import pathlib
import sys
import time

BACKEND, MODEL, OUT, STAGES = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4].split(",")

chunked_ce_calls = 0
if BACKEND == "unsloth":
    import unsloth  # noqa: F401 - first, before transformers and TRL, as Unsloth asks
    from unsloth_zoo.cpu import ops

    real_ce = ops.chunked_linear_cross_entropy

    def counted_ce(*args, **kwargs):
        global chunked_ce_calls
        chunked_ce_calls += 1
        return real_ce(*args, **kwargs)

    ops.chunked_linear_cross_entropy = counted_ce   # the patched forward looks it up in ops at each call

from labkit.config import PreferenceConfig, RLConfig, SFTConfig  # noqa: E402
from labkit.models import adapters  # noqa: E402
from labkit.runs.callbacks import read_jsonl  # noqa: E402

real_load = adapters.load_for_training
adapters.load_for_training = lambda *a, **kw: real_load(*a, **{**kw, "backend": BACKEND})


def chars(prompts, completions, **_):
    """A reward that differs within a group (the tiny model's rewards are all 0), so GRPO gets a gradient."""
    return [float(len(str(c)) % 7) for c in completions]


def run(stage: str):
    common = dict(model=MODEL, output_dir=str(OUT / stage), dtype="float32", seed=0)
    if stage.startswith("sft"):
        from labkit.stages import sft

        return sft.train(SFTConfig.from_preset(
            "cpu-smoke", **common, method=stage.split("-")[1], backend=BACKEND, max_steps=5, batch_size=4,
            learning_rate=1e-2, n_eval=2, eval_max_new_tokens=4))
    if stage == "dpo":
        from labkit.stages import preference

        return preference.train(PreferenceConfig.from_preset(
            "cpu-smoke", **common, max_steps=2, batch_size=2, learning_rate=1e-2, n_eval=2, kl_prompts=0))
    if stage == "grpo":
        from labkit.stages import grpo

        return grpo.train(RLConfig.from_preset(
            "cpu-smoke", **common, max_steps=1, prompts_per_step=2, num_generations=4,
            max_completion_length=8, n_eval=2, eval_max_new_tokens=4, preflight=False, log_rollouts=False,
            reward_weights=""), reward_funcs=[chars])
    raise SystemExit(f"unknown stage {stage}")


results = {}
for stage in STAGES:
    start, calls = time.perf_counter(), chunked_ce_calls
    result = run(stage)
    steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
    results[stage] = {"backend": result.metrics["backend"], "seconds": round(time.perf_counter() - start, 1),
                      "loss": [e["loss"] for e in steps], "grad_norm": [e.get("grad_norm") for e in steps],
                      "chunked_ce_calls": chunked_ce_calls - calls}
info = {"stages": results}
if BACKEND == "unsloth":
    info.update(unsloth=unsloth.__version__, device=unsloth.DEVICE_TYPE)
print("RESULT " + json.dumps(info), flush=True)
