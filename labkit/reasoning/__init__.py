"""Reasoning data and loops: chain-of-thought rows, self-reflection traces, rejection-sampling fine-tuning."""

from labkit.reasoning.cot import build_cot_rows, cot_reply, cot_steps, parse_expression, verify_steps
from labkit.reasoning.reflection import (
    attempt_stats,
    build_reflection_rows,
    collect_attempts,
    correction,
    reflection_reply,
)
from labkit.reasoning.rejection import heldout_eval, keep_verified, rejection_sampling, round_prompts

__all__ = [
    "attempt_stats",
    "build_cot_rows",
    "build_reflection_rows",
    "collect_attempts",
    "correction",
    "cot_reply",
    "cot_steps",
    "heldout_eval",
    "keep_verified",
    "parse_expression",
    "reflection_reply",
    "rejection_sampling",
    "round_prompts",
    "verify_steps",
]
