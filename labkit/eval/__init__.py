"""Evaluation: the task suite (GSM8K, MMLU, HumanEval in a sandbox, IFEval-style, safety, LLM judge, needle in a
haystack) folded into eval cards, card comparison with bootstrap CIs, the in-training eval callback; plus the
probes stages run around training (format accuracy, forgetting), preference accuracy, sampled KL and the
reward-hacking lab.

Import the pieces from their modules (labkit.eval.card, .callback, .sandbox…): importing this package stays cheap.
"""
