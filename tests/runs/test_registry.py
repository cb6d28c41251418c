"""The registry: versions, gated promotion against the holder, rollback, and a crash at every step of a
promote (an exception, and SIGKILL in a child process) leaving the old pointer and a consistent store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from labkit.eval.card import EvalCard, scores_json, slice_rows
from labkit.eval.gates import Gate, Rule
from labkit.eval.tasks import Metric, Scored, Task
from labkit.runs.manifest import HashCache
from labkit.runs.registry import PROMOTE_STEPS, ROLLBACK_STEPS, ChannelGate, Registry, RegistryError

MMLU = Task("mmlu", (Metric("accuracy_loglik"),), lambda cfg: [], lambda *a: None)


def card_file(path, scores: list[float]):
    """An eval card with one MMLU item score per entry, saved as JSON (named after the file, so two
    cards with the same scores are still two files' contents)."""
    items = [Scored("accuracy_loglik", str(i), v) for i, v in enumerate(scores)]
    EvalCard(path.stem, slice_rows(MMLU, items), scores_json("mmlu", items), {}).save(path)
    return path


@pytest.fixture
def reg(tmp_path):
    """A registry with three versions of `policy`: v1 and v2 score 7/8 on MMLU, v3 scores 3/8."""
    r = Registry(tmp_path / "reg.sqlite", cache=HashCache())
    for i, scores in enumerate([[1] * 7 + [0], [1] * 7 + [0], [1] * 3 + [0] * 5], start=1):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_config.json").write_text(str(i))
        r.register(tmp_path / f"a{i}", "policy", card=card_file(tmp_path / f"card{i}.json", scores))
    yield r
    r.close()


def test_register_numbers_versions_and_is_idempotent(reg, tmp_path):
    assert [v["label"] for v in reg.versions()] == ["policy@v1", "policy@v2", "policy@v3"]
    assert reg.register(tmp_path / "a2", "policy") == "policy@v2"  # same content: same version
    assert reg.version("policy")["label"] == "policy@v3"           # a name means its newest version
    assert reg.version(str(tmp_path / "a1"))["label"] == "policy@v1"
    assert reg.version("policy@v2")["card_path"] == str((tmp_path / "card2.json").resolve())
    assert reg.lineage("policy@v2").root == reg.version("policy@v2")["artifact_id"]
    with pytest.raises(RegistryError, match="no registered version 'policy@v9'"):
        reg.version("policy@v9")
    with pytest.raises(RegistryError, match="without '@'"):
        reg.register(tmp_path / "a1", "a@b")
    with pytest.raises(RegistryError, match="neither a recorded artifact"):
        reg.register(tmp_path / "missing", "policy")


def test_promote_gates_against_the_holder_and_rollback_goes_back(reg):
    assert reg.promote("policy@v3", "candidate").promoted  # candidate has no gate
    first = reg.promote("policy@v1", "production")
    assert first and first.previous is None and "first holder" in first.notes[0]
    assert reg.promote("policy@v2", "production").previous == "policy@v1"
    blocked = reg.promote("policy@v3", "production")
    assert not blocked and blocked.reasons[0].startswith("mmlu/accuracy_loglik regressed by 0.500")
    assert "BLOCKED" in str(blocked) and reg.holder("production") == "policy@v2"
    again = reg.promote("policy@v2", "production")
    assert again and "already holds" in again.notes[0]
    assert reg.channels() == {"candidate": "policy@v3", "production": "policy@v2"}
    assert reg.rollback("production") == "policy@v1"
    assert [h["action"] for h in reg.history("production")] == ["rollback", "promote", "promote"]
    with pytest.raises(RegistryError, match="first holder"):
        reg.rollback("production")  # v1 was the first: nothing before it
    with pytest.raises(RegistryError, match="no holder"):
        reg.rollback("staging")
    assert reg.check() == []


def test_rolling_back_twice_walks_two_versions_back(reg):
    for v in ("policy@v1", "policy@v2", "policy@v3"):
        assert reg.promote(v, "candidate")
    assert reg.rollback("candidate") == "policy@v2" and reg.rollback("candidate") == "policy@v1"
    assert reg.check() == []


def test_cards_custom_gates_and_missing_cards(reg, tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "w").write_text("x")
    bare = reg.register(tmp_path / "bare", "other")
    blocked = reg.promote(bare, "production")
    assert not blocked and "has no eval card" in blocked.reasons[0]
    # A card passed at promote time is judged and kept with the version.
    card = card_file(tmp_path / "bare_card.json", [1] * 8)
    assert reg.promote(bare, "production", card=card)
    assert reg.version(bare)["card_path"] == str(card.resolve())
    # A custom channel with a bound: no holder needed for min/max.
    bound = Gate([Rule("mmlu", "accuracy_loglik", min=0.8)])
    strict = Registry(reg.path, channels={"release": ChannelGate(bound, against_holder=False)})
    low = strict.promote("policy@v3", "release")
    assert not low and low.reasons == ["mmlu/accuracy_loglik = 0.375, below the minimum 0.8"]
    assert strict.promote("policy@v1", "release") and strict.holder("release") == "policy@v1"
    strict.close()


@pytest.mark.parametrize("step", PROMOTE_STEPS)
def test_a_crash_at_any_step_of_promote_leaves_the_old_pointer(reg, tmp_path, step):
    assert reg.promote("policy@v1", "production")
    before = (reg.holder("production"), reg.history("production"), reg.version("policy@v2")["card_id"])
    fresh = card_file(tmp_path / "fresh.json", [1] * 8)   # so the card steps run too

    def crash(name):
        if name == step:
            raise KeyboardInterrupt(f"crash at {name}")

    with pytest.raises(KeyboardInterrupt):
        reg.promote("policy@v2", "production", card=fresh, on_step=crash)
    assert (reg.holder("production"), reg.history("production"),
            reg.version("policy@v2")["card_id"]) == before
    assert reg.check() == []
    assert reg.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The registry still works: the promote goes through, and rollback restores v1.
    assert reg.promote("policy@v2", "production", card=fresh)
    assert reg.rollback("production") == "policy@v1" and reg.check() == []


@pytest.mark.parametrize("step", ROLLBACK_STEPS)
def test_a_crash_at_any_step_of_rollback_leaves_the_pointer(reg, step):
    assert reg.promote("policy@v1", "candidate") and reg.promote("policy@v2", "candidate")

    def crash(name):
        if name == step:
            raise RuntimeError(name)

    with pytest.raises(RuntimeError):
        reg.rollback("candidate", on_step=crash)
    assert reg.holder("candidate") == "policy@v2" and len(reg.history("candidate")) == 2
    assert reg.check() == []


CHILD = textwrap.dedent("""
    import os, signal, sys
    from labkit.runs.registry import Registry

    def die(name):
        if name == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    Registry(sys.argv[1]).promote("policy@v2", "candidate", on_step=die)
""")


def test_sigkill_mid_promote_leaves_the_old_pointer(reg):
    """A real crash: a child process promoting is killed at the steps where rows are half written."""
    assert reg.promote("policy@v1", "candidate")
    reg.close()
    for step in ("history", "pointer"):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(reg.path), step], capture_output=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        with Registry(reg.path) as after:
            assert after.holder("candidate") == "policy@v1" and len(after.history("candidate")) == 1
            assert after.check() == []
    with Registry(reg.path) as after:
        assert after.promote("policy@v2", "candidate") and after.rollback("candidate") == "policy@v1"


def test_check_finds_a_pointer_that_lags_its_history(reg):
    assert reg.promote("policy@v1", "candidate")
    # Written outside the API: a history row without the pointer move, as a non-atomic promote would leave.
    reg.conn.execute("INSERT INTO channel_history (channel, artifact_id, previous_id, action, at) "
                     "SELECT 'candidate', artifact_id, id, 'promote', 'now' FROM channel_history")
    assert reg.check() == ["channel 'candidate' points at history row 1, but its newest is 2"]
