"""Widgets and dashboards for the notebooks. They observe runs and models; nothing in labkit imports them."""

from labkit.dash.chat import ChatBox
from labkit.dash.live import EVAL_PANEL, PREFERENCE_PANELS, RL_PANELS, SFT_PANELS, LiveDashboard, Panel
from labkit.dash.lora import lora_math, lora_math_widget, scale_slider
from labkit.dash.plots import before_after, loss_curve
from labkit.dash.rl import (
    RolloutBrowser,
    accuracy_vs_time,
    compare_rl,
    load_rollouts,
    reward_playground,
    rl_curves,
    rollout_html,
    rounds_plot,
)
from labkit.dash.tokens import token_view

__all__ = ["EVAL_PANEL", "PREFERENCE_PANELS", "RL_PANELS", "SFT_PANELS", "ChatBox", "LiveDashboard", "Panel",
           "RolloutBrowser", "accuracy_vs_time", "before_after", "compare_rl", "load_rollouts", "lora_math",
           "lora_math_widget",
           "loss_curve", "reward_playground", "rl_curves", "rollout_html", "rounds_plot", "scale_slider",
           "token_view"]
