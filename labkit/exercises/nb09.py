"""Checks for notebook 09 (inference): a batch's KV cache, static batching's idle slots, speculative
decoding's expected speed-up, and what a train–serve log-prob gap does to GRPO's clipped importance ratio."""

from __future__ import annotations

import torch

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.infer.agreement import agreement_stats

# SmolLM2-135M (model.config): the shapes that size its KV cache
LAYERS, KV_HEADS, HEAD_DIM, Q_HEADS = 30, 3, 64, 9
BATCH, SEQ_LEN = 32, 2048
# 09.2's workload: eight requests' token budgets, in arrival order, served four at a time
BUDGETS, STATIC_BATCH = [8, 64, 8, 8, 16, 16, 16, 16], 4


def _kv_bytes(heads: int = KV_HEADS, kv: int = 2, dtype_bytes: int = 2, batch: int = BATCH) -> int:
    return kv * LAYERS * heads * HEAD_DIM * dtype_bytes * batch * SEQ_LEN


@exercise("09.1", hints=["Per token and layer the cache holds a key and a value vector per key/value head.",
                         "2 (K and V) × 30 layers × 3 KV heads × 64 dims × 2 bytes (bf16) per token, "
                         "× 32 sequences × 2048 tokens, / 2**20 for MiB."])
def kv_cache(answer) -> str:
    mib = number(answer, "MiB")

    def near(n_bytes: int) -> bool:
        return close(mib, n_bytes / 2**20, rel=0.03) or close(mib, n_bytes / 1e6, rel=0.03)

    if near(_kv_bytes()):
        return (f"{_kv_bytes() / 2**20:.0f} MiB, more than five times the bf16 weights (about 260 MiB): at "
                "long contexts and large batches the cache, not the model, fills the GPU, which is why "
                "engines page it (vLLM) and why grouped-query attention keeps 3 KV heads for 9 query heads.")
    if near(_kv_bytes(heads=Q_HEADS)):
        wrong("that caches all 9 attention heads; with grouped-query attention only the 3 key/value heads "
              "are cached (num_key_value_heads), each shared by 3 query heads")
    if near(_kv_bytes(kv=1)):
        wrong("that is half the cache: each layer stores a key vector and a value vector per head")
    if near(_kv_bytes(dtype_bytes=4)):
        wrong("that is fp32 (4 bytes); the engine keeps the cache in bf16, 2 bytes a number")
    if near(_kv_bytes(batch=1)):
        wrong("that is one sequence's cache; the batch holds 32")
    wrong(f"{mib:g} MiB is not 2 × layers × KV heads × head dim × 2 bytes × 32 × 2048 tokens")


@exercise("09.2", hints=["A static batch decodes until its longest request is done: every row takes that "
                         "many decoding slots.",
                         "Batch 1 (budgets 8, 64, 8, 8) takes 4 × 64 slots, batch 2 (four × 16) 4 × 16; "
                         "wasted = 1 − (useful tokens) / (all slots)."])
def idle_slots(answer) -> str:
    share = number(answer, "a fraction of the slots")
    batches = [BUDGETS[i:i + STATIC_BATCH] for i in range(0, len(BUDGETS), STATIC_BATCH)]
    useful = sum(BUDGETS)
    slots = sum(len(b) * max(b) for b in batches)
    right = 1 - useful / slots
    if close(share, right, rel=0.02):
        return (f"{right:.3f}: more than half the slots decode for requests that are already done, all of "
                "them in the batch the long request holds; continuous batching would admit a waiting request "
                "into each freed slot and waste none.")
    if close(share, useful / slots, rel=0.02):
        wrong("that is the useful share of the slots; the question asks for the wasted share")
    if close(share, 100 * right, rel=0.02):
        wrong("write the share as a fraction between 0 and 1, not a percentage")
    if close(share, 1 - useful / (len(BUDGETS) * max(BUDGETS)), rel=0.02):
        wrong("that pads all eight requests to 64; the batches are four requests each, so only the first "
              "batch waits for the long request")
    if close(share, sum(1 - sum(b) / (len(b) * max(b)) for b in batches) / len(batches), rel=0.02):
        wrong("that averages the two batches' shares; pool the slots of both batches instead (the first "
              "batch decodes four times as many)")
    wrong(f"{share:g} is not 1 − useful tokens / decoding slots for these two batches")


def _speedup(alpha: float, k: int, c: float) -> float:
    return (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1))


@exercise("09.3", hints=["The target keeps drafted token i only if it kept tokens 1…i−1 too (probability "
                         "α^i), and always adds one token of its own: E[tokens] = 1 + α + α² + … + α^k.",
                         "That sum is (1 − α^(k+1)) / (1 − α); one step costs one target forward plus k "
                         "draft forwards, 1 + k·c target-forwards. Speed-up = E[tokens] / (1 + k·c)."])
def spec_speedup(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    got = number(answer(0.8, 4, 0.1), "a speed-up (one number)")
    tokens = (1 - 0.8**5) / 0.2
    if close(got, (1 + 4 * 0.8) / 1.4, rel=1e-3):
        wrong("that treats every drafted token as kept on its own (1 + k·α); a drafted token counts only "
              "if every token before it was kept too")
    if close(got, (tokens - 1) / 1.4, rel=1e-3):
        wrong("that forgets the target's own token: every verification step adds one token, even when "
              "all the drafts are rejected")
    if close(got, tokens, rel=1e-3):
        wrong("that is the tokens per target forward; the draft's k forwards cost k·c of a target forward "
              "each, so divide by 1 + k·c")
    cases(answer, [
        ((0.8, 4, 0.1), _speedup(0.8, 4, 0.1), "α = 0.8, k = 4, a draft at a tenth of the cost"),
        ((0.0, 4, 0.1), _speedup(0.0, 4, 0.1), "a draft that is never right (it slows decoding down)"),
        ((0.6, 8, 0.0), _speedup(0.6, 8, 0.0), "a free proposer (prompt lookup)"),
        ((0.9, 2, 0.25), _speedup(0.9, 2, 0.25), "α = 0.9, k = 2, a draft at a quarter of the cost"),
    ], same=lambda a, b: close(a, b, rel=1e-4))
    return (f"{_speedup(0.8, 4, 0.1):.2f}× at α = 0.8, k = 4, c = 0.1. The payoff needs a high α and a cheap "
            "draft: the first layers of the model itself are cheap but rarely agree with it (section 4), and "
            "a larger k only pays while α^k is still large.")


def _share(lp_engine, lp_train, eps) -> float:
    stats = agreement_stats([torch.as_tensor(lp_engine).tolist()], [torch.as_tensor(lp_train)], eps=eps)
    return stats["clipped"]


@exercise("09.4", hints=["The importance ratio of a token is r = exp(logp_train − logp_engine); clipping "
                         "takes it out of the gradient when r leaves [1 − ε, 1 + ε].",
                         "((lp_train - lp_engine).exp() - 1).abs().gt(eps).float().mean().item()"])
def clipped_share(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    zero = torch.full((4,), -2.0)
    gaps = torch.tensor([0.21, 0.21, -0.21, 0.0])  # +0.21: r = 1.23 (clipped); −0.21: r = 0.81 (kept)
    got = number(answer(zero, zero + gaps, 0.2), "a share of the tokens (one number)")
    if close(got, 0.75, abs_=1e-6):
        wrong("that compares the log-prob gap with ε; the clip is on the ratio exp(gap): a gap of −0.21 "
              "gives r = 0.81, inside [0.8, 1.2]")
    if close(got, 0.25, abs_=1e-6):
        wrong("that is exp(logp_engine − logp_train), the ratio upside down: the trainer's log-prob is "
              "on top (the new policy over the policy that sampled)")
    if close(got, 2, abs_=1e-6):
        wrong("that counts the clipped tokens; return their share of all tokens")
    g = torch.Generator().manual_seed(9)
    lp_e = -torch.rand(200, generator=g) * 5
    lp_t = lp_e + torch.randn(200, generator=g) * 0.15
    cases(answer, [
        ((zero, zero + gaps, 0.2), 0.5, "gaps of +0.21, +0.21, −0.21 and 0 at ε = 0.2"),
        ((lp_e, lp_t, 0.2), _share(lp_e, lp_t, 0.2), "200 tokens with bf16-sized gaps, ε = 0.2"),
        ((lp_e, lp_t, 0.1), _share(lp_e, lp_t, 0.1), "the same tokens, ε = 0.1"),
        ((lp_e, lp_e.clone(), 0.2), 0.0, "an engine that agrees exactly (fp32 on both sides)"),
    ], same=lambda a, b: close(a, b, abs_=1e-6))
    return ("every clipped token is one GRPO drops from the gradient for no reason but arithmetic: the "
            "policy has not moved yet, only the two forward passes disagree. Same dtype on both sides, or "
            "TRL's vllm_importance_sampling_correction, keeps them in.")
