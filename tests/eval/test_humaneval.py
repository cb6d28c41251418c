"""HumanEval: the packaged canonical solutions all pass in the sandbox, wrong ones fail, pass@k,
completion parsing."""

from __future__ import annotations

import pytest

from labkit.config import EvalConfig
from labkit.eval import humaneval
from labkit.eval.sandbox import boundary


@pytest.fixture(scope="module")
def problems():
    return humaneval.load(EvalConfig(source="fixture"))


def test_every_canonical_solution_passes_in_the_sandbox(problems):
    assert len(problems) == 164
    results = humaneval.check_solutions(problems, [p["canonical_solution"] for p in problems],
                                        allow_weak_sandbox=not boundary().available)
    failed = [(p["task_id"], r.status, r.stderr[-200:]) for p, r in zip(problems, results) if not r.ok]
    assert failed == []


def test_wrong_and_hanging_solutions_fail(problems):
    first = problems[0]  # has_close_elements
    wrong, hang = "    return False\n", "    while True:\n        pass\n"
    results = humaneval.check_solutions([first, first], [wrong, hang], timeout=1.0,
                                        allow_weak_sandbox=not boundary().available)
    assert [r.status for r in results] == ["failed", "timeout"]
    assert "AssertionError" in results[0].stderr


def test_an_early_exit_or_an_always_equal_answer_fails(problems):
    first = problems[0]  # has_close_elements: returns a bool
    cheats = ["    import os\n    os._exit(0)\n", "    raise SystemExit(0)\n",
              "    class Yes:\n        __eq__ = lambda self, other: True\n    return Yes()\n",
              "    return True\nimport sys\nsys.exit(0)\n"]
    results = humaneval.check_solutions([first] * len(cheats), cheats, timeout=3.0,
                                        allow_weak_sandbox=not boundary().available)
    assert [r.status for r in results] == ["failed"] * len(cheats), [r.stderr[-200:] for r in results]


@pytest.mark.parametrize(("n", "c", "k", "expected"), [(5, 2, 1, 0.4), (5, 0, 1, 0.0), (5, 5, 3, 1.0),
                                                       (5, 3, 3, 1.0), (4, 1, 2, 0.5), (10, 1, 10, 1.0)])
def test_pass_at_k_against_hand_values(n, c, k, expected):
    # 1 - C(n-c, k) / C(n, k): e.g. n=4, c=1, k=2 → 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert humaneval.pass_at_k(n, c, k) == pytest.approx(expected)


def test_completion_from_chat_replies():
    whole = "Here it is:\n```python\nimport math\n\ndef f(x):\n    return x + 1\n\nprint(f(2))\n```\nDone."
    assert humaneval.completion_from(whole, "f") == "\nimport math\n\ndef f(x):\n    return x + 1\n\n"
    guarded = "def f(x):\n    return x\n\nif __name__ == '__main__':\n    f(input())"
    assert "__main__" not in humaneval.completion_from(guarded, "f")
    helper = "def g(y):\n    return y\n\ndef f(x):\n    return g(x)\n"
    assert "def g" in humaneval.completion_from(helper, "f")
    assert humaneval.completion_from("```\n    return x * 2\n```", "f") == "    return x * 2\n"
    assert humaneval.completion_from("return x * 2", "f") == "    return x * 2\n"  # unindented body
    # no closing
    assert humaneval.completion_from("```python\ndef f(x):\n    return 1", "f").startswith("\ndef f")


def test_a_full_function_reply_runs_after_the_prompt(problems):
    first = problems[0]
    reply = ("```python\nfrom typing import List\n\ndef has_close_elements(numbers: List[float], threshold: "
             "float) -> bool:\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in "
             "numbers[i + 1:])\n```")
    completion = humaneval.completion_from(reply, first["entry_point"])
    assert humaneval.check_solutions([first], [completion], allow_weak_sandbox=not boundary().available)[0].ok


def test_loader_hub_and_bad_rows(monkeypatch):
    from labkit.errors import DataError

    row = {"task_id": "X/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
           "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    monkeypatch.setattr(humaneval, "load_hub", lambda *a, **k: [row])
    assert humaneval.load(EvalConfig(source="hub")) == [row]
    monkeypatch.setattr(humaneval, "load_hub", lambda *a, **k: [{**row, "test": None}])
    with pytest.raises(DataError, match="row 0, field 'test'"):
        humaneval.load(EvalConfig(source="hub"))


def test_run_on_tiny_model_scores_each_k(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=2, humaneval_samples=2, humaneval_k="1,2", humaneval_max_new_tokens=8,
                     sandbox_timeout=2, allow_weak_sandbox=not boundary().available)
    out = humaneval.run(model, tok, humaneval.load(cfg), cfg)
    assert sorted(s.metric for s in out.scores) == ["pass@1", "pass@1", "pass@2", "pass@2"]
    assert all(0.0 <= s.score <= 1.0 for s in out.scores)
    assert sum(out.info["statuses"].values()) == 4
    assert ("bwrap" in out.info["sandbox_layers"]) == boundary().available
