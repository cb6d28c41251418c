"""Verifiable rewards: answer extraction, correctness, format, length and repetition,
in TRL's reward protocol.

Every reward here has the signature TRL's `GRPOTrainer` / `RLOOTrainer` call with
(`reward_funcs=[...]`):

    fn(prompts, completions, **kwargs) -> list[float | None]

`completions` are strings, or conversational message lists `[{"role": "assistant", "content": ...}]` when
the prompts are message lists; kwargs carry the dataset's other columns (here `answer: list[str]`), plus
`completion_ids`, `trainer_state` and a few logging hooks that these functions ignore. TRL logs each
function as `rewards/{fn.__name__}/mean`, so every function's `__name__` is its short registry name.

    from labkit.rewards import get_rewards, playground
    funcs = get_rewards(["correctness", "format"])
    playground(funcs, "What is 40 + 14?", ["54", "#### 54", "The answer is 45."], answer="54")

Answers are read by labkit's one answer reader, labkit.data.answers (`read_answer`, `gold_answer`,
`is_correct`); its names are importable from here and from labkit.rewards too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labkit.data.answers import (  # noqa: F401 (the reader's names stay importable from here)
    FINAL_LINE_RE,
    HASH_RE,
    NUMBER_RE,
    answer_text,
    answers_match,
    boxed,
    boxed_value,
    completion_text,
    extract_number,
    format_number,
    gold_answer,
    is_correct,
    numbers_equal,
    parse_number,
    read_answer,
)
from labkit.errors import ConfigError, DataError
from labkit.rewards.preflight import check_reward_output, reward_names

RewardFunc = Callable[..., list]


def _require_column(name: str, values: Any, n: int, fn: str) -> list:
    if values is None:
        raise DataError(
            "reward columns", None, name,
            f"the '{fn}' reward needs a dataset column '{name}' (TRL passes every non-prompt column to "
            f"reward functions); add it to the prompt rows or pass {name}=[...]",
        )
    values = list(values)
    if len(values) != n:
        raise DataError("reward columns", None, name, f"{len(values)} values for {n} completions in '{fn}'")
    return values


def correctness(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str] | None = None,
                **kwargs: Any) -> list[float]:
    """1.0 when the completion's answer is the row's `answer` (is_correct: read_answer's number against a
    numeric reference as exact rationals, the stated answer's text against any other), else 0.0.

    A missing or empty reference raises DataError naming its row rather than paying 0 for every reply.
    """
    answers = _require_column("answer", answer, len(completions), "correctness")
    scores = []
    for i, (c, a) in enumerate(zip(completions, answers)):
        try:
            scores.append(1.0 if is_correct(c, a) else 0.0)
        except DataError:
            raise DataError("reward columns", i, "answer",
                            f"the reference answer {a!r} is empty; no reply could match it") from None
    return scores


def exact_match(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str] | None = None,
                **kwargs: Any) -> list[float]:
    """1.0 when the whole completion, stripped, is exactly the row's `answer`, stripped; else 0.0."""
    answers = _require_column("answer", answer, len(completions), "exact_match")
    return [1.0 if completion_text(c).strip() == str(a).strip() else 0.0
            for c, a in zip(completions, answers)]


def _format_score(text: str) -> float:
    lines = text.strip().splitlines()
    last = FINAL_LINE_RE.match(lines[-1].strip()) if lines else None
    if last and parse_number(last["rest"]) is not None:
        return 1.0
    if HASH_RE.search(text) or any(boxed_value(b) is not None for b in boxed(text)):
        return 0.5
    return 0.0


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the reply ends on a line `#### <number>`, 0.5 when `#### n` or `\\boxed{n}` appears elsewhere,
    else 0.

    Logged by TRL as `rewards/format/...`: its `__name__` is "format" (the module keeps the `format_reward`
    name, and `__qualname__`, so the builtin is not shadowed and pickling still finds it).
    """
    return [_format_score(completion_text(c)) for c in completions]


format_reward.__name__ = "format"


def _token_counts(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    """Tokens per completion: the sampled ids when TRL passes them, else a whitespace word count."""
    if completion_ids is not None and len(completion_ids) == len(completions):
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c).split()) for c in completions]


class LengthPenalty:
    """Reward `-min(1, (tokens - max_tokens) / max_tokens)` past the budget, 0 within it: in [-1, 0].

    The penalty grows linearly from 0 at `max_tokens` to -1 at twice the budget. A class rather than a
    closure so TRL can pickle it; the instance's `__name__` ("length") is what TRL logs.
    """

    def __init__(self, max_tokens: int = 48):
        if max_tokens < 1:
            raise ConfigError("max_tokens", f"the length budget must be at least 1 token, got {max_tokens}")
        self.max_tokens = max_tokens
        self.__name__ = "length"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None,
                 **kwargs: Any) -> list[float]:
        over = [max(0, n - self.max_tokens) for n in _token_counts(completions, completion_ids)]
        return [-min(1.0, o / self.max_tokens) for o in over]

    def __repr__(self) -> str:
        return f"length_reward(max_tokens={self.max_tokens})"


def length_reward(max_tokens: int = 48) -> LengthPenalty:
    """A length penalty with its own budget (see LengthPenalty); `length` is the 48-token default."""
    return LengthPenalty(max_tokens)


class RepetitionPenalty:
    """Reward minus the share of word n-grams that repeat an earlier one: 0 for no repeats,
    near -1 for a loop.

    A class rather than a closure so TRL can pickle it; the instance's `__name__` is "repetition".
    """

    def __init__(self, n: int = 3):
        if n < 1:
            raise ConfigError("n", f"the n-gram size must be at least 1, got {n}")
        self.n = n
        self.__name__ = "repetition"

    def score(self, text: str) -> float:
        words = text.lower().split()
        grams = [tuple(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]
        if not grams:
            return 0.0
        return -(1.0 - len(set(grams)) / len(grams))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [self.score(completion_text(c)) for c in completions]

    def __repr__(self) -> str:
        return f"repetition_penalty(n={self.n})"


def repetition_penalty(n: int = 3) -> RepetitionPenalty:
    """A repetition penalty over word n-grams of size n (see RepetitionPenalty); `repetition` uses n=3."""
    return RepetitionPenalty(n)


length = length_reward()
repetition = repetition_penalty()

REWARDS: dict[str, RewardFunc] = {
    "correctness": correctness,
    "exact_match": exact_match,
    "format": format_reward,
    "length": length,
    "repetition": repetition,
}


def get_rewards(names: Sequence[str]) -> list[RewardFunc]:
    """The registered reward functions for these names, in order; ConfigError('rewards')
    for an unknown one."""
    if isinstance(names, str):
        names = [s.strip() for s in names.split(",") if s.strip()]
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ConfigError("rewards", f"unknown reward {unknown[0]!r}; known rewards: {', '.join(REWARDS)}")
    return [REWARDS[n] for n in names]


def score_completions(funcs: Sequence[RewardFunc], prompts: Sequence[Any], completions: Sequence[Any],
                      weights: Sequence[float] | None = None, **columns: Any) -> dict:
    """Call each reward function TRL-style and combine them: {"per_function": {name: [r]}, "total": [Σ w·r]}.

    Each output is checked with check_reward_output, so a broken function fails here with a message naming
    it. As in TRL, a None reward means "does not apply" and adds nothing to the total.
    """
    if len(prompts) != len(completions):
        raise DataError("score_completions", None, "prompts",
                        f"{len(prompts)} prompts for {len(completions)} completions; pass one prompt per "
                        "completion")
    weights = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(funcs):
        raise ConfigError("reward_weights", f"{len(weights)} weights for {len(funcs)} reward functions")
    n = len(completions)
    per_function: dict[str, list[float | None]] = {}
    for fn, name in zip(funcs, reward_names(funcs)):
        out = fn(prompts=list(prompts), completions=list(completions), **columns)
        per_function[name] = check_reward_output(fn, out, n, source="score_completions")
    total = [sum(w * r[i] for w, r in zip(weights, per_function.values()) if r[i] is not None)
             for i in range(n)]
    return {"per_function": per_function, "total": [float(t) for t in total]}


def playground(funcs: Sequence[RewardFunc], prompt: Any, answers: Sequence[Any], *,
               weights: Sequence[float] | None = None, **columns: Any) -> list[dict]:
    """Score hand-written candidate replies to one prompt, to see what a reward pays for before training on
    it.

    `answers` are the candidate completions (strings or message lists). Column values such as answer="54"
    apply to every candidate (a list with one value per candidate is used as is). One row per candidate:
    {"completion", <one key per reward>, "total", "extracted"}.
    """
    answers = list(answers)
    n = len(answers)
    cols = {k: list(v) if isinstance(v, (list, tuple)) and len(v) == n else [v] * n
            for k, v in columns.items()}
    scored = score_completions(funcs, [prompt] * n, answers, weights=weights, **cols)
    rows = []
    for i, completion in enumerate(answers):
        text = completion_text(completion)
        row: dict[str, Any] = {"completion": text}
        row.update({name: values[i] for name, values in scored["per_function"].items()})
        row["total"] = scored["total"][i]
        row["extracted"] = extract_number(text)
        rows.append(row)
    return rows
