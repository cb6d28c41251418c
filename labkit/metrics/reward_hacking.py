"""Reward-hacking lab: optimise against a reward model and watch what the reward buys.

Best-of-n sampling is the simplest optimiser there is: draw n replies, keep the one the reward model
likes best. Raising n raises the optimisation pressure (Gao et al. 2022, "Scaling Laws for Reward Model
Overoptimization", https://arxiv.org/abs/2210.10760, measure exactly this). Against a reward model that
learned "longer is better", the selected replies grow while the true quality (is the answer right?)
stays flat. A length-controlled reward (the reward with its linear dependence on length removed, the idea
behind AlpacaEval's length-controlled win rate, Dubois et al. 2024, https://arxiv.org/abs/2404.04475)
stays flat too, which is how the hack is caught without knowing the answers.

    pool = sample_pool(policy, tok, prompts, n=8)
    pool = score_pool(pool, reward_model, rm_tok)
    curve = best_of_n_curve(pool, answers, ns=(1, 2, 4, 8))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labkit.data.answers import extract_number, is_correct
from labkit.models.generate import generate


def final_number(text: str) -> str | None:
    """The answer a free-form reply ends on, read by labkit's one answer reader (labkit.data.answers)."""
    return extract_number(text)


def sample_pool(policy, tok, prompts: Sequence[Any], *, n: int = 8, max_new_tokens: int = 64,
                temperature: float = 1.0, seed: int = 0) -> list[list[dict]]:
    """n sampled replies per prompt: pool[i][j] = {"prompt", "text", "tokens"}."""
    repeated = [p for p in prompts for _ in range(n)]
    outs = generate(policy, tok, repeated, max_new_tokens=max_new_tokens, do_sample=True,
                    temperature=temperature, seed=seed)
    return [[{"prompt": prompts[i], "text": o.text, "tokens": len(o.token_ids)}
             for o in outs[i * n:(i + 1) * n]] for i in range(len(prompts))]


def score_pool(pool: list[list[dict]], reward_model, rm_tok, *, key: str = "reward") -> list[list[dict]]:
    """Add each reply's reward under `reward_model` (labkit.metrics.reward_model.score) as `key`."""
    from labkit.metrics.reward_model import score

    flat = [s for group in pool for s in group]
    rewards = score(reward_model, rm_tok, [s["prompt"] for s in flat], [s["text"] for s in flat])
    for s, r in zip(flat, rewards):
        s[key] = r
    return pool


def length_slope(pool: list[list[dict]], key: str = "reward") -> tuple[float, float]:
    """(slope, intercept) of the least-squares line reward ≈ intercept + slope · tokens over every sample."""
    xs = [float(s["tokens"]) for group in pool for s in group]
    ys = [s[key] for group in pool for s in group]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return slope, my - slope * mx


def best_of_n_curve(pool: list[list[dict]], answers: Sequence[str], *, ns: Sequence[int] = (1, 2, 4, 8),
                    key: str = "reward") -> list[dict]:
    """For each n: the replies best-of-n picks (first n samples, highest reward), and what they are worth.

    Columns: n, reward (what was optimised), length-controlled reward (reward minus slope · (tokens - mean
    tokens), slope fitted on the whole pool), tokens, and correct (share whose final number is the answer).
    """
    slope, _ = length_slope(pool, key)
    mean_tokens = sum(s["tokens"] for g in pool for s in g) / sum(len(g) for g in pool)
    rows = []
    for n in ns:
        if n > min(len(g) for g in pool):
            raise ValueError(f"best-of-{n} needs {n} samples per prompt; the pool has "
                             f"{min(len(g) for g in pool)}")
        picked = [max(group[:n], key=lambda s: s[key]) for group in pool]
        rows.append({
            "n": n,
            "reward": _mean(s[key] for s in picked),
            "length_controlled_reward": _mean(s[key] - slope * (s["tokens"] - mean_tokens) for s in picked),
            "tokens": _mean(s["tokens"] for s in picked),
            "correct": _mean(is_correct(s["text"], a) for s, a in zip(picked, answers)),
        })
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def best_of_n_lab(policy, tok, reward_models: dict[str, tuple[Any, Any]], cfg) -> dict[str, Any]:
    """Sample one pool from `policy` (BestOfNConfig `cfg`), score it with each reward model, read the curves.

    reward_models: {name: (model, tokenizer)}. Returns {"curves": {name: best_of_n_curve rows}, "pool": pool,
    "slopes": {name: reward per extra token}}.
    """
    from labkit.data.io import read_jsonl
    from labkit.data.samples import SAMPLES_DIR

    rows = [r for r in read_jsonl(SAMPLES_DIR / f"{cfg.data}.jsonl")
            if r.get("split") == cfg.split][: cfg.prompts]
    pool = sample_pool(policy, tok, [r["prompt"] for r in rows], n=cfg.n, max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature, seed=cfg.seed)
    ns = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= cfg.n]
    curves, slopes = {}, {}
    for name, (model, rm_tok) in reward_models.items():
        score_pool(pool, model, rm_tok, key=name)
        curves[name] = best_of_n_curve(pool, [r["answer"] for r in rows], ns=ns, key=name)
        slopes[name] = length_slope(pool, key=name)[0]
    return {"curves": curves, "pool": pool, "slopes": slopes}
