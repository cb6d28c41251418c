"""Training-time measurements: KL to the reference, preference accuracy, format and forgetting probes,
reward-model scoring and calibration, reward-hacking analysis, RL held-out accuracy, and the one mechanism
that runs any of them every N steps of a stage (`labkit.metrics.periodic`).

The benchmark suite (GSM8K, MMLU, …), eval cards and gates live in `labkit.eval`; this package holds what a
stage measures about the model it is training. Import the pieces from their modules: importing this package
stays cheap.
"""
