"""RL systems lab: asynchronous rollouts with a staleness bound, collocated vs disaggregated generation,
partial rollouts, weight sync, and a memory and capacity planner.

`labkit.rlsys.planner` is pure arithmetic (no torch needed to plan); `labkit.rlsys.loop` runs the
asynchronous GRPO loop with rollout workers in their own processes. Import the pieces from their modules:
importing this package stays cheap.
"""
