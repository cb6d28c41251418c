"""A run tracked by rank 0 only: the other processes of a multi-process run follow its plan and write nothing.

Under `accelerate launch` every process runs the same stage code. Rank 0 starts the run as a single process
would (manifest, status, lineage: labkit.runs.tracking.RunTracker) and broadcasts what it decided — start,
resume from which checkpoint, or skip a finished run — so that all ranks take the same branch. The others get
a `FollowerRun`: the same plan, budget and telemetry, no file written (no manifest, status, scores, lineage
or result.json).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.dist import broadcast_from_main, is_main, sum_across_ranks, world_size
from labkit.errors import LabkitError
from labkit.runs.manifest import Manifest, StartPlan
from labkit.runs.tracking import RunTracker


def _count_all_ranks(tracker: RunTracker) -> None:
    """This rank's token counts replaced by the whole run's (every rank calls it in complete())."""
    t = tracker.telemetry
    generated, trained = sum_across_ranks([t.tokens_generated, t.tokens_trained])
    t.tokens_generated, t.tokens_trained = int(generated), int(trained)


class MainRun(RunTracker):
    """Rank 0 of a multi-process run: a RunTracker whose final telemetry counts every rank's tokens."""

    def complete(self, result, outputs: Mapping[str, str | os.PathLike] | None = None):
        _count_all_ranks(self)
        return super().complete(result, outputs)


class FollowerRun(RunTracker):
    """Rank ≠ 0's view of the run rank 0 tracks: its plan, manifest and checkpoint, and nothing written."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest, plan: StartPlan, checkpoint: str | None):
        super().__init__(path, manifest, plan, registry=None)
        self.checkpoint = Path(checkpoint) if checkpoint else None

    def complete(self, result, outputs: Mapping[str, str | os.PathLike] | None = None):
        """Finish without writing: the telemetry goes into result.metrics, rank 0 saves the result."""
        _count_all_ranks(self)
        self.finished = True
        result.metrics["telemetry"] = self.telemetry.summary()
        return result

    def _finish(self, status: str, **kwargs: Any) -> None:
        self.finished = True

    def _write_scores(self) -> None:
        return None

    def record_lineage(self, status: str, outputs=None) -> None:
        return None


def start_tracked(path: str | os.PathLike, manifest: Manifest, *, force: bool = False) -> RunTracker:
    """RunTracker.start on rank 0; on the other ranks a FollowerRun with rank 0's decision.

    An error rank 0 meets while starting (a ManifestError…) is raised on every rank, so none waits forever.
    """
    if world_size() == 1:
        return RunTracker.start(path, manifest, force=force)
    tracker, error = None, None
    if is_main():
        try:
            tracker = MainRun.start(path, manifest, force=force)
        except Exception as exc:  # every rank must hear of it
            error = exc
    decided = None
    if error is not None:
        decided = {"error": f"{type(error).__name__}: {error}"}
    elif tracker is not None:
        decided = {"plan": tracker.plan, "manifest": tracker.manifest,
                   "checkpoint": str(tracker.checkpoint) if tracker.checkpoint else None}
    decided = broadcast_from_main(decided)
    if error is not None:
        raise error
    if decided.get("error") is not None:
        raise LabkitError(f"rank 0 could not start the run in {path}: {decided['error']}")
    if tracker is not None:
        return tracker
    return FollowerRun(path, decided["manifest"], decided["plan"], decided["checkpoint"])
