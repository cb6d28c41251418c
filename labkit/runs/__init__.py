"""Run bookkeeping: the callback protocol and JSONL logs (callbacks), HTML reports (report), run manifests
and folders (manifest), tracked runs with budgets, final statuses and telemetry (tracking), the lineage store
(lineage) and the model registry with gated promotion (registry)."""
