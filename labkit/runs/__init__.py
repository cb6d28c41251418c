"""Run bookkeeping: the callback protocol and JSONL logs (callbacks), HTML reports (report), run manifests
and folders (manifest), the lineage store (lineage) and the model registry with gated promotion (registry)."""
