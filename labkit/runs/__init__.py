"""Run bookkeeping: the callback protocol and JSONL logs (callbacks), HTML reports (report)."""
