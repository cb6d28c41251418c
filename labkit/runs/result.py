"""RunResult: what every stage's train() returns — where things were written and what was measured."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class RunResult:
    """What every stage's train() returns: where the run wrote its files and what it measured.

    `metrics` holds the final numbers (a `before` and `after` dict of held-out evals, train loss, steps,
    timings, the run's `telemetry` and `run` status, and the stage's own extras); `config` the flat config
    the run used; `model` and `tokenizer` the trained model, still in memory, for the next cell. `save()`
    writes result.json beside the log; `RunResult.load(folder)` reads it back.

    Example:
        result = sft.train(SFTConfig.from_preset("cpu-smoke"))
        result.metrics["after"], result.adapter_dir, read_jsonl(result.log_path)
    """

    stage: str
    output_dir: pathlib.Path
    metrics: dict[str, Any]                # final numbers: before/after evals, train loss, tokens/s…
    config: dict[str, Any]                 # the flat config the run used
    log_path: pathlib.Path | None = None   # JSONL of every step/eval event
    adapter_dir: pathlib.Path | None = None
    model: Any = None                      # the trained model (PeftModel for LoRA/QLoRA), kept in memory
    tokenizer: Any = None
    samples: list[dict] = dataclasses.field(default_factory=list)  # before/after generations

    def save(self) -> pathlib.Path:
        """Write metrics, config and samples as result.json next to the run's other files."""
        path = self.output_dir / "result.json"
        payload = {"stage": self.stage, "metrics": self.metrics, "config": self.config,
                   "log_path": str(self.log_path) if self.log_path else None,
                   "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
                   "samples": self.samples}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, output_dir: str | pathlib.Path,
             loader: Callable[[], tuple[Any, Any]] | None = None) -> RunResult:
        """A saved run's result from its result.json. `loader() -> (model, tokenizer)` loads the trained
        model the first time `model` or `tokenizer` is read (without one, both are None).

        Example:
            RunResult.load("runs/sft").metrics["after"]
        """
        out = pathlib.Path(output_dir)
        data = json.loads((out / "result.json").read_text(encoding="utf-8"))
        def path(p: str | None) -> pathlib.Path | None:
            return pathlib.Path(p) if p else None

        return StoredRunResult(data["stage"], out, data["metrics"], data["config"],
                               log_path=path(data.get("log_path")), adapter_dir=path(data.get("adapter_dir")),
                               samples=data.get("samples") or [], loader=loader)


_UNSET = object()


class StoredRunResult(RunResult):
    """A RunResult read back from result.json (a run that had already finished): `model` and `tokenizer`
    are loaded from the saved weights when first read, so a result nobody trains on costs no load."""

    def __init__(self, stage: str, output_dir: pathlib.Path, metrics: dict[str, Any], config: dict[str, Any],
                 *, log_path: pathlib.Path | None = None, adapter_dir: pathlib.Path | None = None,
                 samples: list[dict] | None = None, loader: Callable[[], tuple[Any, Any]] | None = None):
        self.stage, self.output_dir, self.metrics, self.config = stage, output_dir, metrics, config
        self.log_path, self.adapter_dir, self.samples = log_path, adapter_dir, list(samples or [])
        self._loader = loader
        self._model: Any = _UNSET
        self._tokenizer: Any = _UNSET

    def _load(self) -> None:
        model, tok = self._loader() if self._loader is not None else (None, None)
        if self._model is _UNSET:
            self._model = model
        if self._tokenizer is _UNSET:
            self._tokenizer = tok

    @property
    def model(self) -> Any:
        """The trained model, loaded on first use."""
        if self._model is _UNSET:
            self._load()
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use."""
        if self._tokenizer is _UNSET:
            self._load()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value

    def __repr__(self) -> str:
        loaded = "loaded" if self._model is not _UNSET else "loaded on first use"
        return f"StoredRunResult(stage={self.stage!r}, output_dir={str(self.output_dir)!r}, model {loaded})"
