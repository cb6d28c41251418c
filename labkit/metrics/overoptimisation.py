"""Reward-model over-optimisation, measured: proxy reward and gold accuracy against KL from the reference.

Optimising a learned (proxy) reward first improves the true (gold) objective and then, as the policy moves
further from where the reward model was trained, can make it worse while the proxy keeps rising (Gao, Schulman
& Hilton 2022, "Scaling Laws for Reward Model Overoptimization", https://arxiv.org/abs/2210.10760). On the
arithmetic prompts the gold reward is verifiable, so both can be measured on the same samples:

    point = policy_point(model, tok, rows, reward)             # one point of an RL run's curve
    curve = best_of_n_curve(model, tok, rows, reward, ns=(1, 2, 4, 8))

`policy_point` samples completions of held-out prompts from the policy and reports the proxy reward (the
learned reward's mean), gold accuracy (the share whose answer is right) and KL(π ‖ π_ref) on those very
samples (k3 estimate, labkit.metrics.kl). Best-of-n picks, for each prompt, the sample the proxy likes best
among n from the reference policy; its KL from the reference is known in closed form, log n − (n − 1)/n
(Stiennon et al. 2020), so both optimisers share the x-axis. Gao et al. plot against √KL; both are returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from labkit.data.answers import is_correct


def _sample(model, tok, rows: Sequence[dict], n: int, *, max_new_tokens: int, temperature: float, seed: int):
    """(repeated rows, generations): n samples per row's prompt from `model`, row order kept."""
    from labkit.models.generate import generate

    repeated = [r for r in rows for _ in range(n)]
    was_training = model.training
    model.eval()
    try:
        outs = generate(model, tok, [r["prompt"] for r in repeated], max_new_tokens=max_new_tokens,
                        do_sample=True, temperature=temperature, seed=seed, batch_size=32)
    finally:
        model.train(was_training)
    return repeated, outs


def policy_point(model, tok, rows: Sequence[dict], reward: Callable, *, samples: int = 2,
                 max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                 reference=None) -> tuple[dict[str, float], list[dict]]:
    """Proxy reward, gold accuracy and KL from the reference on `samples` completions per held-out row.

    Args:
        rows: {"prompt": message list, "answer": str} (what labkit.stages.rl_common.load_prompt_rows gives).
        reward: the proxy, in TRL's protocol (a labkit.rewards.LearnedReward).
        reference: the reference model; None for a PEFT policy whose adapter-free base is the reference.
    Returns:
        ({"proxy", "gold", "kl", "sqrt_kl", "kl_per_token", "length"}, per-sample rows) — usable as a
        labkit.metrics.periodic.PeriodicEval measurement.
    """
    import torch

    from labkit.data.chat import encode
    from labkit.metrics.kl import as_reference, kl_summary
    from labkit.models.generate import as_prompt_text
    from labkit.models.logprobs import completion_batch, masked_token_logps

    repeated, outs = _sample(model, tok, rows, samples, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed)
    texts = [o.text for o in outs]
    proxy = reward([r["prompt"] for r in repeated], texts)
    gold = [1.0 if is_correct(t, r["answer"]) else 0.0 for t, r in zip(texts, repeated)]
    prompt_ids = [encode(tok, as_prompt_text(tok, r["prompt"])) for r in repeated]
    sequences, masks, pad = completion_batch(prompt_ids, [o.token_ids for o in outs], tok)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            policy_lp = masked_token_logps(model, sequences, masks, pad_id=pad)
            with as_reference(model, reference) as ref:
                ref_lp = masked_token_logps(ref, sequences, masks, pad_id=pad)
    finally:
        model.train(was_training)
    kl = kl_summary(policy_lp, ref_lp)
    n = len(texts)
    metrics = {"proxy": sum(proxy) / n, "gold": sum(gold) / n, "kl": kl["kl"], "sqrt_kl": math.sqrt(kl["kl"]),
               "kl_per_token": kl["kl_per_token"], "length": sum(len(o.token_ids) for o in outs) / n}
    samples_out = [{"prompt": r["prompt"][-1]["content"], "answer": r["answer"], "completion": t,
                    "proxy": p, "gold": g} for r, t, p, g in zip(repeated, texts, proxy, gold)]
    return metrics, samples_out


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ reference) in nats: log n − (n − 1)/n (exact for a continuous reward without ties)."""
    return math.log(n) - (n - 1) / n


def best_of_n_curve(model, tok, rows: Sequence[dict], reward: Callable, *, ns: Sequence[int] = (1, 2, 4, 8),
                    max_new_tokens: int = 48, temperature: float = 1.0,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Best-of-n against the proxy, from `model` (the reference policy), for each n in `ns`.

    max(ns) samples are drawn per prompt once; for each n they are cut into max(ns) // n disjoint groups
    and the proxy's favourite of each group is kept, so every n averages over all samples.
    Returns one row per n: {"n", "kl", "sqrt_kl", "proxy", "gold"}.
    """
    top = max(ns)
    if any(n < 1 or top % n for n in ns):
        raise ValueError(f"every n must be ≥ 1 and divide the largest ({top}); got {list(ns)}")
    repeated, outs = _sample(model, tok, rows, top, max_new_tokens=max_new_tokens, temperature=temperature,
                             seed=seed)
    texts = [o.text for o in outs]
    proxy = reward([r["prompt"] for r in repeated], texts)
    gold = [1.0 if is_correct(t, r["answer"]) else 0.0 for t, r in zip(texts, repeated)]
    out = []
    for n in sorted(ns):
        picked_proxy, picked_gold = [], []
        for start in range(0, len(texts), n):  # groups never straddle prompts: top is a multiple of n
            best = max(range(start, start + n), key=lambda i: proxy[i])
            picked_proxy.append(proxy[best])
            picked_gold.append(gold[best])
        kl = best_of_n_kl(n)
        mean_proxy = sum(picked_proxy) / len(picked_proxy)
        out.append({"n": n, "kl": kl, "sqrt_kl": math.sqrt(kl), "proxy": mean_proxy,
                    "gold": sum(picked_gold) / len(picked_gold)})
    return out
