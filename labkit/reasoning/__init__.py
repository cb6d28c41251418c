"""Reasoning data: chain-of-thought rows, self-reflection traces and the rejection-sampling data builders.

The rejection-sampling loop itself trains, so it is a stage: labkit.stages.rejection.train.
"""

from labkit.reasoning.cot import build_cot_rows, cot_reply, cot_steps, parse_expression, verify_steps
from labkit.reasoning.reflection import (
    attempt_stats,
    build_reflection_rows,
    collect_attempts,
    correction,
    reflection_reply,
)
from labkit.reasoning.rejection import keep_verified, round_prompts, sample_round

__all__ = [
    "attempt_stats",
    "build_cot_rows",
    "build_reflection_rows",
    "collect_attempts",
    "correction",
    "cot_reply",
    "cot_steps",
    "keep_verified",
    "parse_expression",
    "reflection_reply",
    "round_prompts",
    "sample_round",
    "verify_steps",
]
