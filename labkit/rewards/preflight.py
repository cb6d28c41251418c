"""RL pre-flight checks: catch the setups that would train on no signal, before the first optimizer step.

GRPO and RLOO learn only from reward differences inside a group of completions to the same prompt. A
run whose prompts skip the chat template, whose reward function returns the wrong thing, whose
completions are all cut off, or whose reward never varies will burn its whole budget on zero gradient and
still print a smooth loss. `preflight()` samples a small probe batch with the real settings and raises a
PreflightError naming the failed check and what to change:

    report = preflight(model, tok, prompts, [correctness, format_reward], columns={"answer": answers})
    report      # in a notebook: truncation rate, reward means, zero-variance groups, sample rollouts
"""

from __future__ import annotations

import dataclasses
import html
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from labkit.errors import DataError, LabkitError


class PreflightError(LabkitError):
    """An RL pre-flight check failed; `check` names it (e.g. 'reward_output', 'truncation')."""

    def __init__(self, check: str, message: str):
        self.check = check
        self.message = message
        super().__init__(f"RL pre-flight check '{check}' failed: {message}")


def reward_name(fn: Any) -> str:
    """The name TRL logs a reward function under (functools.partial unwrapped, else `__name__`,
    else the class)."""
    while hasattr(fn, "func") and hasattr(fn, "keywords"):  # functools.partial
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def reward_names(funcs: Sequence[Any]) -> list[str]:
    """One column name per reward function: its TRL name, with #2, #3 on repeats so none is overwritten."""
    out: list[str] = []
    for fn in funcs:
        name = reward_name(fn)
        k = sum(1 for o in out if o == name or o.startswith(f"{name}#"))
        out.append(f"{name}#{k + 1}" if k else name)
    return out


# ---------------------------------------------------------------------------------------------- prompts

_PROBE = ("LABKITPROBEUSERONE", "LABKITPROBEREPLY", "LABKITPROBEUSERTWO")


def _common_suffix(a: str, b: str) -> str:
    k = 0
    while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
        k += 1
    return a[len(a) - k:]


def template_framing(tokenizer: Any) -> tuple[str, str]:
    """(user-turn header, generation prompt) of the tokenizer's chat template, found by rendering a probe.

    The header is what the template writes right before a user message's content: the longest common
    suffix of the text before the first user turn and the text between an assistant reply and the next
    user turn (so a default system prompt before the first turn is not part of it). The generation
    prompt is what add_generation_prompt=True appends. Either may be "" for an unusual template.
    """
    from labkit.data.chat import render

    u1, reply, u2 = _PROBE
    convo = [{"role": "user", "content": u1}, {"role": "assistant", "content": reply},
             {"role": "user", "content": u2}]
    text = render(tokenizer, convo)
    with_prompt = render(tokenizer, convo, add_generation_prompt=True)
    before_first = text[:text.find(u1)]
    between = text[text.find(reply) + len(reply):text.find(u2)]
    header = _common_suffix(before_first, between) if u1 in text and u2 in text else ""
    generation = with_prompt[len(text):] if with_prompt.startswith(text) else ""
    return header, generation


def _is_messages(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt)


def check_prompts_templated(tokenizer: Any, prompts: Sequence[Any], source: str = "prompts") -> None:
    """Raise unless every prompt will reach the model in its chat format.

    Message lists are fine (the trainer templates them) as long as the tokenizer has a chat template.
    Plain strings given to a chat model must already be templated: contain the template's user-turn
    header and end with its generation prompt, or the model sees raw text it was never tuned on.
    A tokenizer without a chat template (a base model) takes plain strings as they are.
    """
    from labkit.data.chat import require_chat_template

    if not prompts:
        raise PreflightError("prompts", f"{source} is empty; pass at least one prompt")
    kinds = {"messages" if _is_messages(p) else "string" if isinstance(p, str) else type(p).__name__
             for p in prompts}
    odd = kinds - {"messages", "string"}
    if odd:
        i = next(i for i, p in enumerate(prompts) if not (_is_messages(p) or isinstance(p, str)))
        raise DataError(source, i, "prompt", f"a prompt must be a string or a list of messages, "
                        f"got {type(prompts[i]).__name__}")
    if len(kinds) > 1:
        i = next(i for i, p in enumerate(prompts) if isinstance(p, str) != isinstance(prompts[0], str))
        raise PreflightError("prompt_template", f"{source} mixes plain strings and message lists (row 0 is a "
                             f"{'string' if isinstance(prompts[0], str) else 'message list'}, row {i} is "
                             "not); the trainer needs one kind: use message lists for every row")
    if "messages" in kinds:
        require_chat_template(tokenizer, source)
        return
    if not getattr(tokenizer, "chat_template", None):
        return  # a base model: raw text prompts are what it expects
    header, generation = template_framing(tokenizer)
    for i, prompt in enumerate(prompts):
        missing = []
        if header and header not in prompt:
            missing.append(f"the user-turn header {header!r}")
        if generation and not prompt.endswith(generation):
            missing.append(f"the generation prompt {generation!r} at the end")
        if missing:
            raise PreflightError(
                "prompt_template",
                f"{source} row {i} is a plain string that has not been through the chat template "
                f"(it lacks {' and '.join(missing)}): {prompt[:80]!r}. A chat model given raw text answers "
                "off-distribution. Pass prompts as message lists ([{'role': 'user', 'content': ...}]) so the "
                "trainer templates them, or render each with labkit.data.chat.render(tokenizer, messages, "
                "add_generation_prompt=True)",
            )


# ---------------------------------------------------------------------------------------------- rewards

def check_reward_output(fn: Any, output: Any, n: int, source: str = "reward function") -> list[float | None]:
    """The reward function's output as a list of n floats (or None), or a PreflightError saying what is wrong.

    TRL wants one real number per completion, or None for "does not apply"; a 1-D tensor or array is
    accepted too. Booleans, strings, NaN and infinities are rejected, and so is an all-None output.
    """
    name = reward_name(fn)
    where = f"reward function '{name}' (in {source})"
    if hasattr(output, "tolist") and hasattr(output, "ndim"):  # torch tensor or numpy array
        if output.ndim != 1:
            raise PreflightError("reward_output",
                                 f"{where} returned a {output.ndim}-D {type(output).__name__} of "
                                 f"shape {tuple(output.shape)}; expected a 1-D list of {n} rewards, one per "
                                 "completion")
        output = output.tolist()
    if not isinstance(output, (list, tuple)):
        raise PreflightError("reward_output", f"{where} returned {type(output).__name__} {output!r:.80}; "
                             f"expected a list of {n} floats, one per completion")
    if len(output) != n:
        raise PreflightError("reward_output", f"{where} returned a list of length {len(output)}, "
                             f"expected {n} (one reward per completion)")
    values: list[float | None] = []
    for i, r in enumerate(output):
        if r is None:
            values.append(None)
            continue
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            hint = " (convert it with float(...))" if isinstance(r, (str, bool)) else ""
            raise PreflightError("reward_output",
                                 f"{where} returned {type(r).__name__} {r!r:.40} at index {i}; "
                                 f"expected a list of {n} floats{hint}")
        if not math.isfinite(float(r)):
            raise PreflightError("reward_output",
                                 f"{where} returned {float(r)} at index {i}; rewards must be "
                                 f"finite (return None for 'does not apply'), expected {n} finite floats")
        values.append(float(r))
    if n and all(v is None for v in values):
        raise PreflightError("reward_output",
                             f"{where} returned None for all {n} completions, so it gives no "
                             "reward at all; return a float where the reward applies")
    return values


# ---------------------------------------------------------------------------------------------- rollouts

def _std(xs: Sequence[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def check_rollouts(completions_finished: Sequence[bool], rewards: Sequence[float], group_size: int, *,
                   max_completion_length: int) -> dict:
    """Check a probe batch of rollouts (grouped consecutively, group_size per prompt) can teach anything.

    Raises PreflightError, in this order, when every completion was truncated ('truncation'), when the
    total reward is zero everywhere ('reward_signal'), or when every group's rewards are identical
    ('reward_variance'). Otherwise returns summary stats, with `warnings` for partial problems.
    """
    n = len(rewards)
    if len(completions_finished) != n:
        raise ValueError(f"{len(completions_finished)} finished flags for {n} rewards")
    if group_size < 1 or n == 0 or n % group_size:
        raise ValueError(f"{n} rewards do not split into groups of {group_size}")
    rewards = [0.0 if r is None else float(r) for r in rewards]
    truncation_rate = 1.0 - sum(bool(f) for f in completions_finished) / n
    if truncation_rate == 1.0:
        raise PreflightError(
            "truncation",
            f"all {n} sampled completions hit max_completion_length={max_completion_length} before ending, "
            "so every reward is computed on a cut-off answer (and a final `#### n` line never arrives). "
            "Raise max_completion_length, or ask for shorter answers in the prompt (e.g. 'Reply with only "
            "the number').",
        )
    if all(r == 0.0 for r in rewards):
        raise PreflightError(
            "reward_signal",
            f"the total reward was 0 for all {n} probe completions, so the reward cannot teach anything: "
            "every advantage is zero. Try the reward on hand-written answers with labkit.rewards.playground; "
            "check that the expected format (e.g. '#### n') and the `answer` column match what the model "
            "writes; or add a partial-credit reward such as 'format'.",
        )
    groups = [rewards[i:i + group_size] for i in range(0, n, group_size)]
    stds = [_std(g) for g in groups]
    zero = [s <= 1e-8 * max(1.0, max(abs(r) for r in g)) for s, g in zip(stds, groups)]
    zero_fraction = sum(zero) / len(groups)
    if zero_fraction == 1.0:
        raise PreflightError(
            "reward_variance",
            f"every group of {group_size} completions got identical rewards, so GRPO/RLOO advantages (reward "
            "minus the group's mean) are all zero and there is no gradient. Sample more generations per "
            "prompt, raise the temperature, or use rewards that give partial credit (e.g. add 'format').",
        )
    warnings = []
    if truncation_rate >= 0.5:
        warnings.append(f"{truncation_rate:.0%} of completions were truncated at {max_completion_length} "
                        "tokens; consider raising max_completion_length")
    if zero_fraction >= 0.5:
        warnings.append(f"{zero_fraction:.0%} of groups have zero reward variance and give no gradient; "
                        "consider more generations, a higher temperature or partial-credit rewards")
    mean = sum(rewards) / n
    return {
        "completions": n,
        "group_size": group_size,
        "truncation_rate": truncation_rate,
        "reward_mean": mean,
        "reward_std": _std(rewards),
        "nonzero_rate": sum(r != 0.0 for r in rewards) / n,
        "zero_variance_groups": zero_fraction,
        "group_stds": stds,
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------- preflight

@dataclasses.dataclass
class PreflightReport:
    """What the probe batch looked like when every check passed."""

    truncation_rate: float
    reward_mean: float
    zero_variance_groups: float              # fraction of groups whose rewards are all equal
    group_stds: list[float]
    reward_means: dict[str, float | None]    # per reward function, over the completions it applied to
    warnings: list[str]
    samples: list[dict]                      # {"prompt", "completion", "rewards": {name: r}, "total"}

    @property
    def ok(self) -> bool:
        """True when the checks passed with no warnings."""
        return not self.warnings

    def table(self) -> list[dict]:
        """The sample rollouts as flat rows (prompt, completion, one column per reward, total)."""
        return [{"prompt": s["prompt"], "completion": s["completion"], **s["rewards"], "total": s["total"]}
                for s in self.samples]

    def __str__(self) -> str:
        means = ", ".join(f"{k}={v:.3f}" if v is not None else f"{k}=n/a"
                          for k, v in self.reward_means.items())
        lines = [f"RL pre-flight passed: truncated {self.truncation_rate:.0%}, reward mean "
                 f"{self.reward_mean:.3f} ({means}), zero-variance groups {self.zero_variance_groups:.0%}"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = self.table()
        head = "".join(f"<th>{esc(str(k))}</th>" for k in (rows[0] if rows else {}))
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(f'{v:.3f}' if isinstance(v, float) else str(v)[:120])}</td>"
                             for v in r.values()) + "</tr>" for r in rows)
        warn = "".join(f"<li>{esc(w)}</li>" for w in self.warnings)
        summary = esc(str(self).splitlines()[0])
        return (f"<div><b>{summary}</b>{f'<ul>{warn}</ul>' if warn else ''}"
                f"<table><tr>{head}</tr>{body}</table></div>")


def _ignore(*args: Any, **kwargs: Any) -> None:
    """Stands in for TRL's log_extra / log_metric hooks during the probe."""


def preflight(model: Any, tokenizer: Any, prompts: Sequence[Any], reward_funcs: Sequence[Any], *,
              columns: dict[str, Sequence[Any]] | None = None, reward_weights: Sequence[float] | None = None,
              num_generations: int = 4, max_completion_length: int = 64, temperature: float = 1.0,
              probe_prompts: int = 4, seed: int = 0, samples: int = 8,
              sample: Callable[[list], list] | None = None) -> PreflightReport:
    """Sample a probe batch with the training settings and run every check; raise PreflightError on failure.

    Takes the first `probe_prompts` prompts (and the same rows of `columns`, e.g. {"answer": [...]}),
    samples `num_generations` completions each, calls every reward function the way TRL does (message-list
    completions for message-list prompts; the repeated columns, `completion_ids` and `trainer_state` as
    kwargs), validates each output, then checks truncation, reward signal and group variance on the
    weighted total.

    `sample(prompts)` replaces the sampler (labkit.models.generate on `model` at `temperature`): it gets the
    probe prompts, each repeated num_generations times, and returns one labkit.models.generate.Generation
    per prompt; a run that rolls out with another engine (vLLM) probes with that engine.
    """
    from transformers import TrainerState

    from labkit.models.generate import generate

    probe = list(prompts[:probe_prompts])
    check_prompts_templated(tokenizer, probe)
    columns = dict(columns or {})
    for key, values in columns.items():
        if len(values) < len(probe):
            raise DataError("columns", None, key, f"{len(values)} values for {len(probe)} probe prompts; "
                            "give one value per prompt")
    weights = [1.0] * len(reward_funcs) if reward_weights is None else [float(w) for w in reward_weights]
    if not reward_funcs:
        raise PreflightError("reward_output", "no reward functions given; pass at least one")
    if len(weights) != len(reward_funcs):
        raise PreflightError("reward_output",
                             f"{len(weights)} reward weights for {len(reward_funcs)} functions")

    conversational = _is_messages(probe[0])
    g = num_generations
    repeated = [p for p in probe for _ in range(g)]  # TRL order: a prompt's G completions are consecutive
    cols = {k: [v for v in list(vals)[:len(probe)] for _ in range(g)] for k, vals in columns.items()}
    # Templated strings are passed through as is; message lists get the chat template inside generate.
    if sample is not None:
        gens = sample(repeated)
    else:
        gens = generate(model, tokenizer, repeated, do_sample=True, temperature=temperature,
                        max_new_tokens=max_completion_length, seed=seed, chat=conversational)
    completions = [[{"role": "assistant", "content": o.text}] if conversational else o.text for o in gens]
    n = len(completions)

    per_function: dict[str, list[float | None]] = {}
    for fn, key in zip(reward_funcs, reward_names(reward_funcs)):
        name = reward_name(fn)
        try:
            out = fn(prompts=repeated, completions=completions, completion_ids=[o.token_ids for o in gens],
                     trainer_state=TrainerState(), log_extra=_ignore, log_metric=_ignore, **cols)
        except LabkitError:
            raise
        except Exception as exc:
            raise PreflightError("reward_call",
                                 f"reward function '{name}' raised {type(exc).__name__}: {exc} "
                                 f"(called with prompts, completions, completion_ids, trainer_state and the "
                                 f"columns {sorted(cols)})") from exc
        per_function[key] = check_reward_output(fn, out, n, source="preflight")

    total = [sum(w * r[i] for w, r in zip(weights, per_function.values()) if r[i] is not None)
             for i in range(n)]
    stats = check_rollouts([o.finished for o in gens], total, g, max_completion_length=max_completion_length)

    def _mean(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return sum(got) / len(got) if got else None

    shown = range(min(n, samples))
    rows = [{"prompt": gens[i].prompt, "completion": gens[i].text,
             "rewards": {k: v[i] for k, v in per_function.items()}, "total": total[i]} for i in shown]
    return PreflightReport(
        truncation_rate=stats["truncation_rate"], reward_mean=stats["reward_mean"],
        zero_variance_groups=stats["zero_variance_groups"], group_stds=stats["group_stds"],
        reward_means={k: _mean(v) for k, v in per_function.items()}, warnings=stats["warnings"], samples=rows,
    )
