"""Adapter from a transformers Trainer's callback stream to labkit's callback protocol.

Kept apart from labkit.runs.callbacks so that dashboards can import the protocol without transformers.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import TrainerCallback

from labkit.runs.callbacks import Callbacks, RunHandles, scalar_metrics


class TrainerCallbackAdapter(TrainerCallback):
    """Turns a ``transformers.Trainer``'s callback stream into the labkit protocol.

    - ``on_train_begin`` → ``on_start`` with the schedule (max_steps, num_train_epochs, …) and ``handles``
      (a RunHandles with the model, tokenizer and these callbacks);
    - ``on_log`` → ``on_step`` for training logs (loss, learning_rate, grad_norm, epoch, …), or
      ``on_eval`` with the ``eval_`` prefix stripped for evaluation logs;
    - ``on_evaluate`` → ``on_eval`` unless that evaluation was already sent as a log (the Trainer logs
      evaluation metrics itself before calling it; this covers callers that do not);
    - the Trainer's final summary log (``train_runtime``, ``train_loss``, …) is not a step: it is
      held back and merged into ``on_end``, which ``on_train_end`` sends with ``global_step``,
      ``epoch``, and the last step and eval metrics under ``last_step`` / ``last_eval``.

    Step numbers are ``state.global_step``. Only the main process dispatches, so a multi-GPU run
    writes one log, not one per rank. Non-scalar log values are dropped.
    """

    def __init__(self, callbacks: Iterable[object] | object | None = ()):
        self.callbacks = Callbacks(callbacks)
        self._reset()

    def _reset(self) -> None:
        self._last_step: dict[str, float] = {}
        self._last_eval: dict[str, float] = {}
        self._train_summary: dict[str, float] = {}
        self._evals_sent: set[tuple[int, frozenset[str]]] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        """Forget the last run, then send on_start with the schedule and RunHandles (main process only)."""
        self._reset()
        if state.is_world_process_zero:
            self.callbacks.on_start(
                {
                    "global_step": state.global_step,
                    "max_steps": state.max_steps,
                    "num_train_epochs": state.num_train_epochs,
                    "train_batch_size": state.train_batch_size,
                    "gradient_accumulation_steps": args.gradient_accumulation_steps,
                    "learning_rate": args.learning_rate,
                    "logging_steps": state.logging_steps,
                    "eval_steps": state.eval_steps,
                    "output_dir": str(args.output_dir),
                    "handles": RunHandles(kwargs.get("model"), kwargs.get("processing_class"),
                                          self.callbacks),
                }
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Route a log: the final summary is held for on_end, `eval_` logs go to on_eval, others on_step."""
        if not state.is_world_process_zero or not logs:
            return
        metrics = scalar_metrics(logs, strict=False)
        if "train_runtime" in metrics:
            self._train_summary = metrics
        elif any(key.startswith("eval_") for key in metrics):
            self._send_eval(state.global_step, metrics)
        else:
            self._last_step = metrics
            self.callbacks.on_step(state.global_step, metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Send the evaluation to on_eval unless on_log already sent it."""
        if state.is_world_process_zero and metrics:
            self._send_eval(state.global_step, scalar_metrics(metrics, strict=False))

    def _send_eval(self, step: int, metrics: dict[str, float]) -> None:
        # The same evaluation arrives twice (as a log and through on_evaluate); its step and metric
        # names identify it. `epoch` is left out of the key because Trainer.log adds it to one copy.
        key = (step, frozenset(metrics) - {"epoch"})
        if key in self._evals_sent:
            return
        self._evals_sent.add(key)
        metrics = {name.removeprefix("eval_"): value for name, value in metrics.items()}
        self._last_eval = metrics
        self.callbacks.on_eval(step, metrics)

    def on_train_end(self, args, state, control, **kwargs):
        """Send on_end: global_step, epoch, the held-back train summary, the last step and eval metrics."""
        if state.is_world_process_zero:
            self.callbacks.on_end(
                {
                    "global_step": state.global_step,
                    "epoch": state.epoch,
                    **self._train_summary,
                    "last_step": dict(self._last_step),
                    "last_eval": dict(self._last_eval),
                }
            )


class BudgetCallback(TrainerCallback):
    """Stops a Trainer cleanly once the run's budget is spent (labkit.runs.tracking.RunTracker.over_budget),
    after the step that spent it, saving a checkpoint of that step (into the trainer's output_dir) so the
    run can be resumed from where it stopped."""

    def __init__(self, tracker):
        self.tracker = tracker

    def on_step_end(self, args, state, control, **kwargs):
        """Check the ceilings after every optimizer step; in a multi-process run every rank stops when any
        rank's clock says so (one rank stopping alone would leave the others waiting for it)."""
        from labkit.dist import any_rank

        if any_rank(self.tracker.over_budget(state.global_step, state.max_steps) is not None):
            control.should_training_stop = True
            control.should_save = True


def batch_tokens(inputs) -> int:
    """Tokens in one training batch, whatever the trainer calls them: the sum of every `*attention_mask`
    (SFT, reward, DPO/KTO's prompt/chosen/rejected masks), else GRPO/RLOO's prompt and completion masks,
    else the size of `input_ids` (padding-free batches have no padding to leave out)."""
    if not isinstance(inputs, dict):
        return 0
    masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "sum")]
    if not masks:
        masks = [inputs[k] for k in ("prompt_mask", "completion_mask") if hasattr(inputs.get(k), "sum")]
    if masks:
        return int(sum(int(m.sum()) for m in masks))
    ids = inputs.get("input_ids")
    return int(ids.numel()) if hasattr(ids, "numel") else 0


def instrument(trainer, tracker, *, budget: bool = True):
    """Attach a run's tracker to a transformers Trainer (TRL's included), in place; returns the trainer.

    - budget: a BudgetCallback stops training cleanly at a ceiling, with a checkpoint;
    - tokens trained: each training batch's tokens (`batch_tokens`) are counted as compute_loss sees it;
    - generation time: TRL's GRPO/RLOO `_generate` is timed as the "generation" phase.
    """
    telemetry = tracker.telemetry
    if budget:
        trainer.add_callback(BudgetCallback(tracker))
    compute_loss = trainer.compute_loss

    def counted_loss(model, inputs, *args, **kwargs):
        if getattr(model, "training", False):
            telemetry.add_tokens(trained=batch_tokens(inputs))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counted_loss
    generate = getattr(trainer, "_generate", None)
    if callable(generate):
        def timed_generate(*args, **kwargs):
            with telemetry.phase("generation"):
                return generate(*args, **kwargs)

        trainer._generate = timed_generate
    return trainer
