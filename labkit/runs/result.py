"""RunResult: what every stage's train() returns — where things were written and what was measured."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any


@dataclasses.dataclass
class RunResult:
    """What every stage's train() returns: where the run wrote its files and what it measured.

    `metrics` holds the final numbers (a `before` and `after` dict of held-out evals, train loss, steps,
    timings, and the stage's own extras); `config` the flat config the run used; `model` and `tokenizer`
    the trained model, still in memory, for the next cell. `save()` writes result.json beside the log.

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
