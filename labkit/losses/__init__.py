"""Loss reference implementations: pure functions of logits or log-probs returning (loss, metrics)."""
