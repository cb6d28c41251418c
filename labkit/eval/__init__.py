"""Evaluation: the benchmark suite (GSM8K, MMLU, HumanEval in a sandbox, IFEval-style, safety, LLM judge,
needle in a haystack) folded into eval cards, card comparison with bootstrap CIs, gates that pass or fail a
card, and the in-training eval callback.

What a stage measures about the model it trains (KL, preference accuracy, probes, reward-model calibration)
lives in labkit.metrics. Import the pieces from their modules (labkit.eval.card, .gates, .sandbox…):
importing this package stays cheap.
"""
