"""Weight snapshots for stage tests: the `weights_before` fixture and `assert_trained(before, model)`.

Every stage test checks what a run trained the same way:

    def test_x(tiny_model_dir, tmp_path, weights_before, assert_trained):
        result = stage.train(cfg(...))
        assert_trained(weights_before, result.model)

(`assert_trained` is a fixture that returns the checking function: with --import-mode=importlib a test module
cannot import from conftest.py.)

`weights_before` patches the model loaders the stages call (`labkit.models.adapters.load_for_training`, and
`labkit.stages.reward.load_reward_model` for the reward stage) so that every model a stage loads is
snapshotted right after loading, before any step: each named parameter's value and its requires_grad flag.
`weights_before.watch(owner, "Name")` snapshots what another factory builds as well (the PPO stage's
`PolicyWithValue`, which adds a value head around the loaded policy).

`assert_trained(before, model)` then compares `model` with the snapshot taken of *that same object*, by
parameter name (so a wrapper's names are never compared with the wrapped model's): every trainable tensor
changed, every frozen tensor is bit-identical, the names and flags are the ones it had before training (but
for TRL's frozen "ref" adapter, which must be a bit-identical copy of the initial "default" one), all weights
are finite, and there is at least one trainable tensor and (unless `frozen=False`, as for full fine-tuning)
one frozen one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import pytest
import torch


@dataclasses.dataclass
class Snapshot:
    """One model's parameters as loaded: name → (detached copy, requires_grad)."""

    model: Any
    params: dict[str, tuple[torch.Tensor, bool]]

    @classmethod
    def of(cls, model) -> Snapshot:
        return cls(model, {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()})

    @property
    def trainable(self) -> set[str]:
        return {n for n, (_, grad) in self.params.items() if grad}

    @property
    def frozen(self) -> set[str]:
        return {n for n, (_, grad) in self.params.items() if not grad}


class WeightsBefore:
    """The snapshots taken so far in one test, in load order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self._monkeypatch = monkeypatch
        self.snapshots: list[Snapshot] = []

    def watch(self, owner: Any, name: str) -> None:
        """Snapshot whatever `owner.name(...)` returns (its first element if it returns a tuple).

        A class is replaced by a subclass (so isinstance checks still hold) that snapshots each new instance
        at the end of its __init__; a function by a wrapper that snapshots its result.
        """
        real = getattr(owner, name)
        record = self._record
        if inspect.isclass(real):
            def __init__(self, *args, **kwargs):
                real.__init__(self, *args, **kwargs)
                record(self)

            patched = type(real.__name__, (real,), {"__init__": __init__, "__module__": real.__module__,
                                                   "__qualname__": real.__qualname__,
                                                   "__doc__": real.__doc__})
        else:
            def patched(*args, **kwargs):
                out = real(*args, **kwargs)
                record(out[0] if isinstance(out, tuple) else out)
                return out

        self._monkeypatch.setattr(owner, name, patched)

    def _record(self, model) -> None:
        self.snapshots.append(Snapshot.of(model))

    def of(self, model) -> Snapshot:
        """The snapshot taken of this very object (the last one, if it was loaded more than once)."""
        found = [s for s in self.snapshots if s.model is model]
        assert found, (f"no snapshot of this {type(model).__name__}: snapshotted "
                       f"{[type(s.model).__name__ for s in self.snapshots]}")
        return found[-1]


@pytest.fixture
def weights_before(monkeypatch) -> WeightsBefore:
    """Snapshot every model a stage loads (via load_for_training or load_reward_model) before any step."""
    from labkit.models import adapters
    from labkit.stages import reward

    # The stages look both loaders up as module attributes at call time, so patching those is enough.
    w = WeightsBefore(monkeypatch)
    w.watch(adapters, "load_for_training")
    w.watch(reward, "load_reward_model")
    return w


def check_trained(before: WeightsBefore | Snapshot, model, *, frozen: bool = True,
                   may_stay: Mapping[str, str] | None = None) -> Snapshot:
    """Every trainable tensor of `model` changed and every frozen one is bit-identical to the snapshot.

    before: the fixture (the snapshot of this very `model` object is used) or a Snapshot.
    frozen: whether at least one frozen tensor is expected (True for LoRA; False for full fine-tuning).
    may_stay: trainable names that may legitimately stay unchanged → why (state the reason precisely).
    Returns the snapshot, so callers can check which names were trainable.
    """
    snap = before.of(model) if isinstance(before, WeightsBefore) else before
    may_stay = dict(may_stay or {})
    after = dict(model.named_parameters())
    gone = sorted(set(snap.params) - set(after))
    assert not gone, f"parameters gone in training: {gone[:5]}"
    # TRL's DPO/KTO/GRPO trainers, given a PEFT model and no ref_model, add a frozen adapter "ref" copied from
    # "default" at construction, and compute the reference log-probs with it. Those are the only new tensors
    # allowed: each must be frozen and bit-identical to its "default" tensor as loaded (the initial policy).
    added = {n: n.replace(".ref.", ".default.") for n in sorted(set(after) - set(snap.params))}
    odd = [n for n, source in added.items() if ".ref." not in n or source not in snap.params]
    assert not odd, f"new parameters appeared in training: {odd[:5]}"
    for n, source in added.items():
        assert not after[n].requires_grad, f"{n}: TRL's reference adapter is trainable"
        assert torch.equal(after[n].detach(), snap.params[source][0]), f"{n} is not the initial {source}"
    after = {n: p for n, p in after.items() if n not in added}
    assert snap.trainable, "no trainable tensor"
    if frozen:
        assert snap.frozen, "no frozen tensor: expected a frozen base under the adapter"
    assert set(may_stay) <= snap.trainable, (f"may_stay names no trainable tensor: "
                                             f"{set(may_stay) - snap.trainable}")
    flipped = [n for n, (_, grad) in snap.params.items() if after[n].requires_grad != grad]
    assert not flipped, f"requires_grad flipped in training: {flipped[:5]}"
    nonfinite = [n for n, p in after.items() if not torch.isfinite(p.detach()).all()]
    assert not nonfinite, f"non-finite weights after training: {nonfinite[:5]}"
    stuck = [n for n in sorted(snap.trainable - set(may_stay))
             if torch.equal(snap.params[n][0], after[n].detach())]
    moved = [n for n in sorted(snap.frozen) if not torch.equal(snap.params[n][0], after[n].detach())]
    assert not stuck, f"{len(stuck)} of {len(snap.trainable)} trainable tensors did not change: {stuck[:8]}"
    assert not moved, f"{len(moved)} frozen tensors changed: {moved[:8]}"
    return snap


@pytest.fixture
def assert_trained():
    """`check_trained`: assert_trained(before, model, *, frozen=True, may_stay=None) -> Snapshot."""
    return check_trained
