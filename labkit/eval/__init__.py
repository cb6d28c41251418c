"""Evaluation: probes run around training (format accuracy, forgetting), preference accuracy, sampled KL, and the
reward-hacking lab."""
