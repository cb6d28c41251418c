"""Multiple-choice cloze scoring: each option's text is scored as a continuation of a plain-text context, and
the option with the highest log-likelihood per character wins.

This is how lighteval scores the "cloze formulation" tasks of SmolLM2's model card (MMLU-cloze, HellaSwag,
ARC), and how lm-evaluation-harness computes `acc_norm`:

    context, options = "Question: Which gas do plants take in?\\nAnswer:", [" oxygen", " carbon dioxide"]
    lps = choice_logprobs(model, tok, [context], [options])     # summed log p(option | context), per option
    score_choices(lps[0], options, gold=1)                      # 1.0, 1/k on a k-way tie that has the gold

- No chat template: the context is plain text, as the harnesses feed base and instruct models alike.
- A context that ends in whitespace gives that whitespace to each continuation (encode_pair), as
  lm-evaluation-harness's `_encode_pair` and lighteval's `tok_encode_pair` do; HellaSwag's prompt ends in
  a space, so its options are scored as "  ending" (two spaces) there too.
- An option's tokens are those of context + option past the longest prefix they share with the context's
  own tokens, so a merge across the boundary is scored as the model reads the whole text.
- Each context is run once and its options continue from its cached keys and values (share_context), so
  a context's tokens cost one pass instead of one per option; the log-probabilities are the same up to
  float rounding (1e-4 in float32).
- Normalisation (per_char): the summed log-probability divided by the option's length in characters, not
  counting one leading space (lighteval's `acc_norm_nospace`, LogProbCharNorm(ignore_first_space=True)).
  Without it an option loses for being long.
"""

from __future__ import annotations

import torch

from labkit.data.chat import encode
from labkit.models.logprobs import masked_logps


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens): whitespace ending the context moves to the continuation, and
    the continuation's tokens are those of the whole text past the prefix it shares with the context's."""
    stripped = context.rstrip()
    context, continuation = stripped, context[len(stripped):] + continuation
    head = encode(tok, context)
    whole = encode(tok, context + continuation)
    shared = next((i for i, (a, b) in enumerate(zip(head, whole)) if a != b), min(len(head), len(whole)))
    return whole[:shared], whole[shared:]


def continuation_logprobs(model, tok, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Summed log p(continuation | context) under `model` for each (context, continuation) pair."""
    seqs, masks = [], []
    for context, continuation in pairs:
        head, tail = encode_pair(tok, context, continuation)
        if not tail:
            raise ValueError(f"continuation {continuation!r} adds no token to its context")
        seqs.append(head + tail)
        masks.append([0] * len(head) + [1] * len(tail))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return [lp for lp, _ in masked_logps(model, seqs, masks, pad_id=pad_id, batch_size=batch_size)]


@torch.inference_mode()
def _shared_prefix_logprobs(model, groups: list[tuple[list[int], list[list[int]]]], pad_id: int,
                            batch_size: int) -> list[list[float]] | None:
    """Per group (prefix tokens, continuations' tokens), the summed log-prob of each continuation: the
    prefixes of `batch_size` groups run once, right-padded, with a key/value cache; their continuations then
    run together on the cache, each copied to its continuations (positions and mask skip the padding).
    Groups are batched in order of prefix length, so padding stays small; results come back in input order.
    None when the model keeps no cache (use_cache off, as under gradient checkpointing in training mode)."""
    order = sorted(range(len(groups)), key=lambda g: len(groups[g][0]))
    out: list[list[float]] = [[] for _ in groups]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        chunk = [groups[g] for g in idx]
        lengths = torch.tensor([len(head) for head, _ in chunk])                       # [b]
        ids = torch.full((len(chunk), int(lengths.max())), pad_id, dtype=torch.long)   # [b, C]
        mask = torch.zeros_like(ids)
        for row, (head, _) in enumerate(chunk):
            ids[row, :len(head)] = torch.tensor(head)
            mask[row, :len(head)] = 1
        first = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=True)
        if getattr(first, "past_key_values", None) is None:
            return None
        rows = torch.arange(len(chunk))
        # log p(first continuation token | prefix), read at each prefix's last real token: [b, V]
        head_lp = first.logits[rows.to(first.logits.device), (lengths - 1).to(first.logits.device)]
        head_lp = head_lp.float().log_softmax(-1).cpu()
        owner = torch.tensor([g for g, (_, tails) in enumerate(chunk) for _ in tails])   # [n]
        tails = [tail for _, ts in chunk for tail in ts]
        cache = first.past_key_values
        cache.reorder_cache(owner.to(model.device))                                     # batch b -> n
        tids = torch.full((len(tails), max(len(t) for t in tails)), pad_id, dtype=torch.long)  # [n, T]
        tmask = torch.zeros_like(tids)
        for row, tail in enumerate(tails):
            tids[row, :len(tail)] = torch.tensor(tail)
            tmask[row, :len(tail)] = 1
        positions = lengths[owner][:, None] + torch.arange(tids.shape[1])[None]          # [n, T]
        logits = model(input_ids=tids.to(model.device),
                       attention_mask=torch.cat([mask[owner], tmask], dim=1).to(model.device),
                       position_ids=positions.to(model.device), past_key_values=cache).logits
        tail_lp = logits.float().log_softmax(-1).cpu()                                 # [n, T, V]
        sums = []
        for row, tail in enumerate(tails):
            total = head_lp[owner[row], tail[0]]
            if len(tail) > 1:
                total = total + tail_lp[row, torch.arange(len(tail) - 1), torch.tensor(tail[1:])].sum()
            sums.append(float(total))
        at = 0
        for g, (_, ts) in zip(idx, chunk):
            out[g] = sums[at:at + len(ts)]
            at += len(ts)
    return out


def choice_logprobs(model, tok, contexts: list[str], options: list[list[str]], batch_size: int = 8,
                    share_context: bool = True) -> list[list[float]]:
    """For each context, the summed log-probability of each of its options (any number per context).

    share_context: run each context once and its options on its cached keys and values (options whose
    tokens merge across the boundary get a prefix of their own); False, or a model that keeps no cache,
    scores every context + option sequence from scratch (continuation_logprobs)."""
    if len(contexts) != len(options):
        raise ValueError(f"{len(contexts)} contexts but {len(options)} option lists")
    if share_context:
        shared = _shared_context_logprobs(model, tok, contexts, options, batch_size)
        if shared is not None:
            return shared
    flat = continuation_logprobs(model, tok, [(c, o) for c, opts in zip(contexts, options) for o in opts],
                                 batch_size)
    out, start = [], 0
    for opts in options:
        out.append(flat[start:start + len(opts)])
        start += len(opts)
    return out


def _shared_context_logprobs(model, tok, contexts: list[str], options: list[list[str]],
                             batch_size: int) -> list[list[float]] | None:
    """choice_logprobs with each context run once: options grouped by the prefix tokens they continue.
    None when the model keeps no cache."""
    groups: list[tuple[list[int], list[list[int]]]] = []
    where: list[list[tuple[int, int]]] = []      # per context, per option: (group, index in the group)
    for context, opts in zip(contexts, options):
        mine: dict[tuple[int, ...], int] = {}
        placed = []
        for option in opts:
            head, tail = encode_pair(tok, context, option)
            if not head or not tail:
                raise ValueError(f"context {context[:40]!r} + option {option!r}: each needs a token of its "
                                 "own")
            if tuple(head) not in mine:
                mine[tuple(head)] = len(groups)
                groups.append((head, []))
            g = mine[tuple(head)]
            groups[g][1].append(tail)
            placed.append((g, len(groups[g][1]) - 1))
        where.append(placed)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    sums = _shared_prefix_logprobs(model, groups, pad_id, batch_size)
    if sums is None:
        return None
    return [[sums[g][j] for g, j in placed] for placed in where]


def char_length(option: str) -> int:
    """The option's length in characters, one leading space not counted (at least 1)."""
    return max(1, len(option) - 1 if option.startswith(" ") else len(option))


def per_char(logprobs: list[float], options: list[str]) -> list[float]:
    """Each option's summed log-probability divided by its char_length."""
    if len(logprobs) != len(options):
        raise ValueError(f"{len(logprobs)} log-probs but {len(options)} options")
    return [lp / char_length(o) for lp, o in zip(logprobs, options)]


def best(values: list[float]) -> list[int]:
    """The indices sharing the highest value (usually one)."""
    top = max(values)
    return [i for i, v in enumerate(values) if v == top]


def score_choices(logprobs: list[float], options: list[str], gold: int) -> float:
    """1.0 when the gold option has the highest per-character log-likelihood; a tie of k options that
    includes it scores 1/k, the expected score of breaking the tie at random."""
    top = best(per_char(logprobs, options))
    return 1 / len(top) if gold in top else 0.0
