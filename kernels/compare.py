"""Each labkit.kernels op beside its plain-torch reference, and the chunked LM-head loss's memory: what
notebook 11 shows, small enough to run under Triton's interpreter on a CPU.

    side_by_side()         one row per op: max |kernel - reference| of the outputs and of every input gradient
                           (under the same random upstream gradient), and each side's forward+backward time
    ce_memory(tokens)      peak bytes of the full-logits loss vs the chunked one, per token count
    train_losses(model)    a few AdamW steps on fixed random batches: a patched model's curve vs a plain one's

The public functions run the Triton kernels where `backend_name()` says they do (a GPU, or a CPU under
TRITON_INTERPRET=1) and their torch path elsewhere, where these differences are then 0 by construction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from labkit.kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from labkit.kernels.logprobs import (
    linear_selected_logprobs,
    linear_selected_logprobs_reference,
    selected_logprobs,
    selected_logprobs_reference,
)
from labkit.kernels.lora import lora_linear, lora_linear_reference
from labkit.kernels.profiling import peak_bytes
from labkit.kernels.rmsnorm import rms_norm, rms_norm_reference
from labkit.kernels.rope import apply_rope, apply_rope_reference
from labkit.kernels.runtime import use_triton
from labkit.kernels.swiglu import swiglu, swiglu_reference


def _cases(tokens: int, hidden: int, vocab: int, device: str, dtype: torch.dtype, seed: int):
    """(op, shape label, inputs, which inputs get a gradient, kernel fn, reference fn) per op."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype)

    labels = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
    labels[: tokens // 4] = -100                       # a masked prompt, as in completion-only SFT
    inter, rank, heads, kv_heads, head_dim = 2 * hidden, 8, 4, 2, hidden // 4
    seq = tokens // 2
    angle = torch.arange(seq)[:, None] * torch.rand(head_dim // 2, generator=gen)
    cos, sin = (torch.cat([f(angle)] * 2, -1)[None].to(device, dtype) for f in (torch.cos, torch.sin))
    yield ("rms_norm", f"[{tokens}, {hidden}]", [randn(tokens, hidden), 1 + randn(hidden, scale=0.1)],
           [True, True], rms_norm, rms_norm_reference)
    yield ("apply_rope", f"q [2, {heads}, {seq}, {head_dim}], k [2, {kv_heads}, ...]",
           [randn(2, heads, seq, head_dim), randn(2, kv_heads, seq, head_dim), cos, sin],
           [True, True, False, False], apply_rope, apply_rope_reference)
    yield ("swiglu", f"[{tokens}, {inter}]", [randn(tokens, inter), randn(tokens, inter)], [True, True],
           swiglu, swiglu_reference)
    yield ("lora_linear", f"[{tokens}, {hidden}] -> {inter}, r={rank}",
           [randn(tokens, hidden), randn(inter, hidden, scale=hidden ** -0.5), randn(rank, hidden, scale=0.1),
            randn(inter, rank, scale=0.1)], [True, False, True, True],
           lambda x, w, a, b: lora_linear(x, w, a, b, 2.0),
           lambda x, w, a, b: lora_linear_reference(x, w, a, b, 2.0))
    h, w = randn(tokens, hidden), randn(vocab, hidden, scale=hidden ** -0.5)
    yield ("linear_cross_entropy", f"[{tokens}, {hidden}] @ [{vocab}, {hidden}]", [h, w], [True, True],
           lambda h, w: linear_cross_entropy(h, w, labels),
           lambda h, w: linear_cross_entropy_reference(h, w, labels))
    yield ("selected_logprobs", f"[{tokens}, {vocab}]", [randn(tokens, vocab)], [True],
           lambda x: selected_logprobs(x, labels), lambda x: selected_logprobs_reference(x, labels))
    yield ("linear_selected_logprobs", f"[{tokens}, {hidden}] @ [{vocab}, {hidden}]", [h, w], [True, True],
           lambda h, w: linear_selected_logprobs(h, w, labels),
           lambda h, w: linear_selected_logprobs_reference(h, w, labels))


def _run(fn: Callable, inputs: list, grad: list[bool], seed: int):
    """fn's outputs, the gradients of the inputs that take one, and the seconds of forward + backward."""
    xs = [x.detach().clone().requires_grad_(True) if g else x for x, g in zip(inputs, grad)]
    start = time.perf_counter()
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(seed)        # the same upstream gradient for kernel and reference
    ups = [torch.randn(o.shape, generator=gen).to(o.device) for o in outs]
    sum((o.float() * u).sum() for o, u in zip(outs, ups)).backward()
    if outs[0].is_cuda:
        torch.cuda.synchronize()
    return outs, [x.grad for x, g in zip(xs, grad) if g], time.perf_counter() - start


def _max_abs(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.detach().float() - y.detach().float()).abs().max()) for x, y in zip(a, b))


def side_by_side(*, tokens: int = 64, hidden: int = 64, vocab: int = 512, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> list[dict]:
    """One row per op: op, shape, triton (whether its kernel ran), max_abs_forward, max_abs_grad,
    kernel_ms, reference_ms. Each side runs once, cold (a first call compiles or interprets)."""
    rows = []
    for op, shape, inputs, grad, kernel, reference in _cases(tokens, hidden, vocab, device, dtype, seed):
        got, got_grads, t_kernel = _run(kernel, inputs, grad, seed + 1)
        want, want_grads, t_ref = _run(reference, inputs, grad, seed + 1)
        rows.append({"op": op, "shape": shape, "triton": use_triton(*inputs),
                     "max_abs_forward": _max_abs(list(got), list(want)),
                     "max_abs_grad": _max_abs(got_grads, want_grads),
                     "kernel_ms": round(t_kernel * 1e3, 2), "reference_ms": round(t_ref * 1e3, 2)})
    return rows


def ce_memory(tokens: tuple[int, ...] = (256, 1024), *, hidden: int = 576, vocab: int = 49152,
              device: str = "cpu", seed: int = 0) -> list[dict]:
    """Peak MiB of the LM-head loss, forward + backward, full logits vs chunked (SmolLM2's shape by default).

    On a CPU the chunked side is its torch path (the Triton rows under the interpreter would take minutes);
    the chunking, and so the saving, is the same."""
    backend = "auto" if device == "cuda" else "torch"
    rows = []
    for n in tokens:
        gen = torch.Generator().manual_seed(seed)
        h = torch.randn(n, hidden, generator=gen).to(device).requires_grad_(True)
        w = (torch.randn(vocab, hidden, generator=gen) * hidden ** -0.5).to(device).requires_grad_(True)
        y = torch.randint(0, vocab, (n,), generator=gen).to(device)
        plain = peak_bytes(lambda h=h, w=w, y=y: linear_cross_entropy_reference(h, w, y).backward(), device)
        h.grad = w.grad = None
        chunked = peak_bytes(lambda h=h, w=w, y=y: linear_cross_entropy(h, w, y, backend=backend).backward(),
                             device)
        rows.append({"tokens": n, "logits_mib": n * vocab * 4 / 2**20, "plain_mib": plain / 2**20,
                     "chunked_mib": chunked / 2**20, "saving": plain / max(chunked, 1)})
    return rows


def train_losses(model: torch.nn.Module, *, steps: int = 6, batch: int = 2, seq: int = 32, lr: float = 1e-3,
                 seed: int = 0) -> tuple[list[float], float]:
    """(loss per step, seconds) of AdamW on two fixed random batches in turn, a quarter of each row masked."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, vocab, (batch, seq), generator=gen) for _ in range(2)]
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        ids = batches[step % 2]
        loss = model(input_ids=ids, labels=ids.masked_fill(torch.arange(seq) < seq // 4, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, time.perf_counter() - start
