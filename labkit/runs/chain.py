"""A training chain as the registry sees it: merge a stage's adapter into a model the next stage starts from,
with the merge recorded in lineage, then register each link with its eval card and promote it through the
channels in order.

    sft_model = merge_run("runs/sft")                 # runs/sft/merged, lineage: base + adapter → merged
    dpo = preference.train(cfg.replace(model=str(sft_model)))
    ...
    steps = promote_chain("runs/registry.sqlite", [("sft", "runs/sft/merged", "cards/sft.json"), ...])

Each merged model is recorded as a `model` artifact under its content hash, which is also the id the next
run's manifest gives its base model, so `labkit lineage` walks from the last link back to the GGUF and the
data files through every stage.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError


class ChainError(LabkitError):
    """A run that cannot be merged or a link that cannot be registered."""


def merge_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, scale: float = 1.0,
              registry: str | os.PathLike | None | bool = True) -> Path:
    """Merge a finished (`done` or `budget_exceeded`) LoRA run's adapter into its base model and save it
    (fp32) as a model directory.

    `scale` multiplies the adapter's alpha/r before the merge: 1.0 merges what was trained; anything else is
    an experiment (a wrong alpha at export is a classic way to ship a broken model).

    `out` defaults to <run>/merged. Done once: a merged folder whose marker names this adapter's hash is
    reused. The merge is recorded in the run's lineage store (`registry`: True for the run's default one,
    a path, or None for none). Returns the merged folder.
    """
    import torch
    from peft import PeftModel

    from labkit.models.loading import load_model
    from labkit.models.lora import scale_adapter
    from labkit.quiet import quiet_progress
    from labkit.runs.lineage import content_hash
    from labkit.runs.manifest import RunDir
    from labkit.runs.tracking import default_registry

    run = RunDir(run_dir)
    adapter = run.path / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ChainError(f"{run.path}: no adapter/ to merge (only LoRA runs are merged; a full fine-tune "
                         "already saved its model)")
    status = run.status().get("status")
    # budget_exceeded stopped cleanly at a ceiling and saved its final adapter (the tour's time-boxed GRPO):
    # a finished run. running, failed and interrupted runs have no final adapter to stand behind.
    if status not in ("done", "budget_exceeded"):
        raise ChainError(f"{run.path}: status is {status!r}, not 'done' or 'budget_exceeded'; merge a "
                         "finished run (or `labkit resume` it first)")
    base = run.manifest().model["name"]
    out = Path(out) if out is not None else run.path / "merged"
    marker = out / "labkit_merge.json"
    adapter_hash = content_hash(adapter)
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    if done.get("adapter_hash") == adapter_hash and done.get("scale", 1.0) == scale:
        return out

    # fp32 base: the merged weights feed another training run, so no rounding to bf16 on the way
    model, tok = load_model(base, dtype=torch.float32, device="cpu")
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    if scale != 1.0:
        scale_adapter(peft_model, scale)
    merged = peft_model.merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    with quiet_progress():
        merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "labkit_merge.json").write_text(json.dumps({"base": base, "adapter": str(adapter.resolve()),
                                                       "adapter_hash": adapter_hash, "scale": scale,
                                                       "run": run.path.name}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # a crash mid-save leaves .partial, never a half-written merged model

    db = default_registry(run.path) if registry is True else registry
    if db:
        _record_merge(Path(db), run, adapter, out, scale)
    return out


def adapter_chain(merged: str | os.PathLike) -> tuple[str, list[Path]]:
    """(first base model, [adapter dirs, first link first]) behind a merged model, read from the markers
    merge_run leaves: a merged model whose base is itself a merged model adds that one's adapters in front.
    Only a chain merged at scale 1 is returned (a scaled merge is not its adapter's model)."""
    adapters: list[Path] = []
    here = Path(merged)
    for _ in range(64):   # a chain is a handful of links; this only guards against a marker loop
        marker = here / "labkit_merge.json"
        if not marker.is_file():
            raise ChainError(f"{here}: no labkit_merge.json (not a model merge_run wrote)")
        done = json.loads(marker.read_text())
        if done.get("scale", 1.0) != 1.0:
            raise ChainError(f"{here}: merged at scale {done['scale']}, not the adapter as trained")
        adapters.insert(0, Path(done["adapter"]))
        base = Path(done["base"])
        if not (base / "labkit_merge.json").is_file():
            return done["base"], adapters
        here = base
    raise ChainError(f"{merged}: the merge markers form a loop")


def _record_merge(db: Path, run, adapter: Path, merged: Path, scale: float) -> None:
    from labkit.runs.lineage import Lineage
    from labkit.runs.manifest import model_record

    record = model_record(run.manifest().model["name"])
    with Lineage(db) as lin:
        base_id = lin.add_artifact("model", None, hash=record.get("hash") or record.get("revision"),
                                   id=None if record.get("hash") else f"model:{record.get('id')}",
                                   meta={"name": record.get("name")})
        adapter_id = lin.add_artifact("adapter", adapter)
        # kind "model": the id the next run's manifest gives its base, so the chain links up
        merged_id = lin.add_artifact("model", merged, meta={"merged_from": adapter_id, "scale": scale})
        run_id = f"merge-{adapter_id.split(':')[-1]}" + (f"-x{scale:g}" if scale != 1.0 else "")
        lin.record_run(run_id, inputs=[base_id, adapter_id], outputs=[merged_id], stage="merge", path=merged,
                       status="done", meta={"scale": scale})


@dataclasses.dataclass
class ChainStep:
    """One link of a promoted chain: its registered version and what each channel said."""

    name: str
    version: str
    candidate: Any
    production: Any

    @property
    def promoted(self) -> bool:
        """Whether this link reached production."""
        return bool(self.production)

    def row(self) -> dict[str, Any]:
        """A table row: link, version, the production verdict and its reasons."""
        return {"link": self.name, "version": self.version,
                "candidate": "promoted" if self.candidate else "blocked",
                "production": "promoted" if self.production else "blocked",
                "reasons": "; ".join(getattr(self.production, "reasons", []) or []) or "—"}


def promote_chain(db: str | os.PathLike, links: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]], *,
                  name: str = "policy", n_boot: int = 1000) -> list[ChainStep]:
    """Register each (link name, model dir, eval card) as a version of `name` and promote it to `candidate`
    then `production`, in chain order: each link's card is judged against the current production holder's
    (the previous link that made it). A blocked link leaves production where it was."""
    from labkit.runs.registry import Registry

    steps = []
    with Registry(db) as reg:
        for link, path, card in links:
            version = reg.register(path, name, kind="model", card=card, meta={"link": link})
            cand = reg.promote(version, "candidate", n_boot=n_boot)
            prod = reg.promote(version, "production", n_boot=n_boot)
            steps.append(ChainStep(link, version, cand, prod))
    return steps
