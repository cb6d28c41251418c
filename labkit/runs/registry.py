"""Model registry: artifact versions, channels gated by eval cards, promotion and rollback in SQLite.

    reg = Registry("runs/registry.sqlite")
    v = reg.register("runs/dpo/adapter", "policy", card="runs/dpo/eval_card.json")   # "policy@v2"
    result = reg.promote(v, "production")     # passes only if its card passes the channel's gate
    result.promoted, result.reasons           # against the current holder's card
    reg.rollback("production")                # back to the version that held it before

A channel points at one history row; promoting writes a history row (which remembers the row it
replaced) and moves the pointer, inside one SQLite transaction that holds the write lock from the
moment the current holder is read. A crash anywhere before COMMIT leaves the old pointer and no
trace of the attempt; `check()` verifies that every channel points at its newest history row.

The registry shares its SQLite file with `labkit.runs.lineage`, so a version's lineage is one query.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.runs.lineage import Lineage, content_hash, now, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    artifact_id TEXT PRIMARY KEY REFERENCES artifacts(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    card_id TEXT REFERENCES artifacts(id),
    registered TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS channel_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES versions(artifact_id),
    previous_id INTEGER REFERENCES channel_history(id),
    action TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
    at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    history_id INTEGER NOT NULL UNIQUE REFERENCES channel_history(id),
    updated TEXT NOT NULL
);
"""
# previous_id is the history row that held the channel before this one: a rollback returns to it and
# copies *its* previous_id, so rolling back twice walks two versions back instead of flip-flopping.

# The steps of a promote, in order; `on_step` is called after each, so a test can crash there.
PROMOTE_STEPS = ("locked", "card_artifact", "card_attached", "history", "pointer")
ROLLBACK_STEPS = ("locked", "history", "pointer")


class RegistryError(LabkitError):
    """An unknown version or channel, or a registry operation that cannot be done."""


@dataclasses.dataclass(frozen=True)
class ChannelGate:
    """What a version needs to enter a channel.

    gate: a labkit.eval.gates.Gate, "default" for DEFAULT_GATE, or None for no gate (no card needed).
    against_holder: compare the card with the current holder's card (the gate's max_regression rules);
        for the first holder of a channel the regression-only rules are skipped, there being nothing
        to regress from, and min/max bounds still apply.
    """

    gate: Any = "default"
    against_holder: bool = True

    def resolve(self):
        """The Gate object (None for no gate)."""
        if isinstance(self.gate, str):
            from labkit.eval.gates import DEFAULT_GATE

            if self.gate != "default":
                raise RegistryError(f"unknown gate name {self.gate!r}: pass a Gate, 'default' or None")
            return DEFAULT_GATE
        return self.gate


# candidate: anything registered may be tried; production (and any channel not listed): the default
# gate against the version that holds it now. Registry(channels=…) changes or adds channels.
DEFAULT_CHANNELS: dict[str, ChannelGate] = {
    "candidate": ChannelGate(None, against_holder=False),
    "production": ChannelGate("default", against_holder=True),
}


@dataclasses.dataclass
class PromoteResult:
    """What a promote did: `promoted`, or the `reasons` it was blocked, plus `notes` on how it was judged."""

    promoted: bool
    channel: str
    version: str
    previous: str | None
    reasons: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    gate_result: Any = None   # the GateResult, when a gate ran

    def __bool__(self) -> bool:
        return self.promoted

    def __str__(self) -> str:
        if self.promoted:
            head = f"promoted {self.version} to {self.channel}" + (f" (was {self.previous})" if self.previous
                                                                   else " (first holder)")
        else:
            head = f"BLOCKED: {self.version} not promoted to {self.channel}:\n  " + "\n  ".join(self.reasons)
        return "\n".join([head, *(f"  note: {n}" for n in self.notes)])


def _label(name: str, version: int) -> str:
    return f"{name}@v{version}"


class Registry(Lineage):
    """Versions, channels and their history, in the lineage store's SQLite file.

    Args:
        path: the SQLite file (default name in the CLI: runs/registry.sqlite).
        channels: channel → ChannelGate, merged over DEFAULT_CHANNELS.
        default_channel: the ChannelGate of channels not named (the strict default gate).
        create, cache: as for Lineage.
    """

    def __init__(self, path: str | os.PathLike, *, channels: Mapping[str, ChannelGate] | None = None,
                 default_channel: ChannelGate = ChannelGate(), create: bool = True, cache=None):
        super().__init__(path, create=create, cache=cache)
        self.channel_gates = {**DEFAULT_CHANNELS, **(channels or {})}
        self.default_channel = default_channel
        with transaction(self.conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)

    # ---- versions ------------------------------------------------------------------------------------------

    def register(self, artifact: str | os.PathLike, name: str, *, kind: str = "adapter",
                 card: str | os.PathLike | None = None, meta: Mapping[str, Any] | None = None) -> str:
        """Register a version of `name` and return its label "name@vN".

        `artifact` is a lineage artifact id or a path (added as a `kind` artifact, content-hashed).
        `card` is an eval card JSON file kept with the version for promotion. Registering content
        that is already a version returns that version's label (attaching `card` if given).
        """
        if not name or "@" in name:
            raise RegistryError(f"a version name must be non-empty and without '@', got {name!r}")
        art_hash = None
        is_id = self.conn.execute("SELECT 1 FROM artifacts WHERE id = ?", (str(artifact),)).fetchone()
        if not is_id:
            if not Path(artifact).exists():
                raise RegistryError(f"{artifact}: neither a recorded artifact nor a file or folder")
            art_hash = content_hash(artifact, self.cache)   # hashed before taking the write lock
        card_hash = content_hash(card, self.cache) if card is not None else None
        with transaction(self.conn):
            art_id = str(artifact) if is_id else self._add_artifact(kind, artifact, id=None, hash=art_hash,
                                                                    meta=meta)
            card_id = self._add_artifact("eval_card", card, id=None, hash=card_hash, meta={"for": art_id}) \
                if card is not None else None
            old = self.conn.execute("SELECT name, version FROM versions WHERE artifact_id = ?",
                                    (art_id,)).fetchone()
            if old is not None:
                if card_id:
                    self.conn.execute("UPDATE versions SET card_id = ? WHERE artifact_id = ?",
                                      (card_id, art_id))
                return _label(old["name"], old["version"])
            n = self.conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?",
                                  (name,)).fetchone()[0]
            self.conn.execute("INSERT INTO versions (artifact_id, name, version, card_id, registered) "
                              "VALUES (?, ?, ?, ?, ?)", (art_id, name, n, card_id, now()))
        return _label(name, n)

    def version(self, ref: str) -> dict[str, Any]:
        """A version by label ("policy@v2"), name (its newest version), artifact id or artifact path."""
        sql = ("SELECT v.*, a.path AS path, a.kind AS kind, a.hash AS hash, c.path AS card_path "
               "FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
               "LEFT JOIN artifacts c ON c.id = v.card_id ")
        name, _, num = ref.rpartition("@v")
        row = None
        if name and num.isdigit():
            row = self.conn.execute(sql + "WHERE v.name = ? AND v.version = ?", (name, int(num))).fetchone()
        row = row or self.conn.execute(sql + "WHERE v.name = ? ORDER BY v.version DESC LIMIT 1",
                                       (ref,)).fetchone()
        row = row or self.conn.execute(sql + "WHERE v.artifact_id = ?", (ref,)).fetchone()
        row = row or self.conn.execute(sql + "WHERE a.path = ? ORDER BY v.version DESC LIMIT 1",
                                       (str(Path(ref).resolve()),)).fetchone()
        if row is None:
            raise RegistryError(f"no registered version {ref!r} in {self.path} "
                                "(register it first: Registry.register)")
        return {**dict(row), "label": _label(row["name"], row["version"])}

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every registered version (of one name), in registration order."""
        rows = self.conn.execute("SELECT artifact_id, name, version FROM versions "
                                 "WHERE ? IS NULL OR name = ? ORDER BY rowid", (name, name)).fetchall()
        return [self.version(_label(r["name"], r["version"])) for r in rows]

    def lineage(self, artifact: str):
        """Lineage.lineage, also for a version label or name ("policy@v2", "policy")."""
        try:
            artifact = self.version(artifact)["artifact_id"]
        except RegistryError:  # not a registered version: an artifact id or path of the lineage store
            pass
        return super().lineage(artifact)

    # ---- channels ------------------------------------------------------------------------------------------

    def channel_gate(self, channel: str) -> ChannelGate:
        """The ChannelGate a channel is judged by."""
        return self.channel_gates.get(channel, self.default_channel)

    def _current(self, channel: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT h.*, v.name, v.version FROM channels c JOIN channel_history h ON h.id = c.history_id "
            "JOIN versions v ON v.artifact_id = h.artifact_id WHERE c.name = ?", (channel,)).fetchone()
        return None if row is None else {**dict(row), "label": _label(row["name"], row["version"])}

    def holder(self, channel: str) -> str | None:
        """The label of the version that holds `channel`, or None."""
        current = self._current(channel)
        return current["label"] if current else None

    def channels(self) -> dict[str, str]:
        """channel → the label of its holder."""
        names = [r[0] for r in self.conn.execute("SELECT name FROM channels ORDER BY name")]
        return {n: self.holder(n) for n in names}

    def history(self, channel: str) -> list[dict[str, Any]]:
        """A channel's promotions and rollbacks, newest first."""
        rows = self.conn.execute(
            "SELECT h.*, v.name, v.version FROM channel_history h JOIN versions v "
            "ON v.artifact_id = h.artifact_id WHERE h.channel = ? ORDER BY h.id DESC", (channel,))
        return [{**dict(r), "label": _label(r["name"], r["version"]), "detail": json.loads(r["detail"])}
                for r in rows]

    def _card(self, card_path: str | None, who: str):
        from labkit.eval.card import EvalCard

        if card_path is None:
            return None
        if not Path(card_path).is_file():
            raise RegistryError(f"the eval card of {who} is gone: {card_path}")
        return EvalCard.load(card_path)

    def _judge(self, channel: str, version: dict, card_path: str | None, current: dict | None,
               n_boot: int) -> tuple[list[str], list[str], Any]:
        """(reasons it is blocked, notes, GateResult) for `version` entering `channel`."""
        policy = self.channel_gate(channel)
        gate = policy.resolve()
        if gate is None:
            return [], [f"channel {channel!r} has no gate"], None
        card = self._card(card_path, version["label"])
        if card is None:
            return [f"{version['label']} has no eval card, and channel {channel!r} is gated by "
                    f"'{gate.name}': pass card= (--card) or register it with one"], [], None
        baseline, notes = None, []
        if policy.against_holder and current is not None:
            holder = self.version(current["label"])
            baseline = self._card(holder["card_path"], holder["label"])
            if baseline is None:
                return [f"the holder of {channel!r}, {holder['label']}, has no eval card to compare with: "
                        "register it again with card="], [], None
            notes.append(f"gate '{gate.name}' against the holder {holder['label']}")
        elif policy.against_holder:
            gate = _without_regression_rules(gate)
            notes.append(f"first holder of {channel!r}: regression rules skipped, bounds checked")
        result = gate.check(card, baseline=baseline, n_boot=n_boot)
        return list(result.reasons), notes, result

    def promote(self, ref: str, channel: str, *, card: str | os.PathLike | None = None, n_boot: int = 1000,
                on_step: Callable[[str], None] | None = None) -> PromoteResult:
        """Point `channel` at version `ref` if its eval card passes the channel's gate; else change nothing.

        Args:
            ref: a version label, name, artifact id or path (see `version`).
            channel: "candidate", "production", or any name (channel_gate says how it is judged).
            card: an eval card file to judge by and keep with the version (default: its registered card).
            n_boot: bootstrap draws for the gate's regression checks.
            on_step: called with each name in PROMOTE_STEPS as the transaction reaches it: a test hook
                that raises (or kills the process) to check a crash leaves the old pointer.
        Returns:
            a PromoteResult; falsy, with reasons, when the gate blocked it.
        """
        step = on_step or (lambda name: None)
        version = self.version(ref)
        card_hash = content_hash(card, self.cache) if card is not None else None
        with transaction(self.conn):
            step("locked")
            current = self._current(channel)
            previous = current["label"] if current else None
            if current is not None and current["artifact_id"] == version["artifact_id"]:
                return PromoteResult(True, channel, version["label"], previous,
                                     notes=[f"{version['label']} already holds {channel!r}: nothing changed"])
            card_path = str(Path(card).resolve()) if card is not None else version["card_path"]
            reasons, notes, gate_result = self._judge(channel, version, card_path, current, n_boot)
            if reasons:
                return PromoteResult(False, channel, version["label"], previous, reasons, notes, gate_result)
            if card is not None:
                card_id = self._add_artifact("eval_card", card, id=None, hash=card_hash,
                                             meta={"for": version["artifact_id"]})
                step("card_artifact")
                self.conn.execute("UPDATE versions SET card_id = ? WHERE artifact_id = ?",
                                  (card_id, version["artifact_id"]))
                step("card_attached")
            detail = {"card": card_path, "gate": getattr(gate_result, "passed", None), "notes": notes}
            hid = self.conn.execute(
                "INSERT INTO channel_history (channel, artifact_id, previous_id, action, at, detail) "
                "VALUES (?, ?, ?, 'promote', ?, ?)",
                (channel, version["artifact_id"], current["id"] if current else None, now(),
                 json.dumps(detail))).lastrowid
            step("history")
            self._point(channel, hid)
            step("pointer")
        return PromoteResult(True, channel, version["label"], previous, [], notes, gate_result)

    def rollback(self, channel: str, *, on_step: Callable[[str], None] | None = None) -> str:
        """Point `channel` back at the version that held it before the current one; returns its label.

        Rolling back twice goes two versions back. RegistryError when there is nothing to go back to.
        """
        step = on_step or (lambda name: None)
        with transaction(self.conn):
            step("locked")
            current = self._current(channel)
            if current is None:
                raise RegistryError(f"channel {channel!r} has no holder to roll back")
            if current["previous_id"] is None:
                raise RegistryError(f"{current['label']} is the first holder of {channel!r}: "
                                    "there is no earlier version to roll back to")
            target = self.conn.execute("SELECT * FROM channel_history WHERE id = ?",
                                       (current["previous_id"],)).fetchone()
            hid = self.conn.execute(
                "INSERT INTO channel_history (channel, artifact_id, previous_id, action, at, detail) "
                "VALUES (?, ?, ?, 'rollback', ?, ?)",
                (channel, target["artifact_id"], target["previous_id"], now(),
                 json.dumps({"from": current["label"]}))).lastrowid
            step("history")
            self._point(channel, hid)
            step("pointer")
        return self.holder(channel)

    def _point(self, channel: str, history_id: int) -> None:
        self.conn.execute("INSERT INTO channels (name, history_id, updated) VALUES (?, ?, ?) "
                          "ON CONFLICT (name) DO UPDATE SET history_id = excluded.history_id, "
                          "updated = excluded.updated", (channel, history_id, now()))

    def check(self) -> list[str]:
        """Problems in the store ([] when consistent): SQLite's integrity and foreign-key checks, and
        every channel pointing at its own newest history row (a newer one would be a half-done promote)."""
        problems = super().check()
        for row in self.conn.execute(
                "SELECT h.channel, MAX(h.id) AS newest, c.history_id, c.name FROM channel_history h "
                "LEFT JOIN channels c ON c.name = h.channel GROUP BY h.channel"):
            if row["name"] is None:
                problems.append(f"channel {row['channel']!r} has history but no pointer")
            elif row["history_id"] != row["newest"]:
                problems.append(f"channel {row['channel']!r} points at history row {row['history_id']}, "
                                f"but its newest is {row['newest']}")
        for row in self.conn.execute("SELECT c.name, h.channel FROM channels c JOIN channel_history h "
                                     "ON h.id = c.history_id WHERE h.channel != c.name"):
            problems.append(f"channel {row['name']!r} points at a history row of {row['channel']!r}")
        for row in self.conn.execute("SELECT h.id, h.channel, p.channel AS pc FROM channel_history h "
                                     "JOIN channel_history p ON p.id = h.previous_id "
                                     "WHERE p.channel != h.channel"):
            problems.append(f"history row {row['id']} of {row['channel']!r} goes back to {row['pc']!r}")
        return problems


def _without_regression_rules(gate):
    """The gate with its max_regression checks removed (rules left with only that check are dropped)."""
    from labkit.eval.gates import Gate

    rules = [dataclasses.replace(r, max_regression=None) for r in gate.rules
             if r.min is not None or r.max is not None]
    return Gate(rules, name=gate.name)
