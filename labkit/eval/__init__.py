"""Evaluation: probes used during and after training (format accuracy, forgetting)."""
