"""Widgets and dashboards for the notebooks. They observe runs and models; nothing in labkit imports them."""

from labkit.dash.chat import ChatBox
from labkit.dash.tokens import token_view

__all__ = ["ChatBox", "token_view"]
