"""Training stages. Each module exposes `train(cfg, callbacks=()) -> RunResult` and reads top to bottom."""
