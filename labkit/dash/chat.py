"""A small ipywidgets chat box around a model, usable live in Jupyter and scriptable headless."""

from __future__ import annotations

import html

from labkit.models.generate import chat


class ChatBox:
    """Chat with a model: `box = ChatBox(model, tok); box` in a cell, or `box.send("hi")` from code.

    Headless (papermill) the widget's state is not kept, so `send` also returns the reply and
    `transcript()` gives the conversation as text for a static output.
    """

    def __init__(self, model, tokenizer, *, system: str | None = None, max_new_tokens: int = 128,
                 temperature: float = 0.0):
        self.model, self.tokenizer = model, tokenizer
        self.history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self._system = list(self.history)
        self._widget = None
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def send(self, text: str) -> str:
        """Add a user turn, generate the assistant's reply (greedy when temperature is 0) and return it."""
        self.history.append({"role": "user", "content": text})
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {}
        reply = chat(self.model, self.tokenizer, self.history, max_new_tokens=self.max_new_tokens, **sampling)
        self.history.append({"role": "assistant", "content": reply})
        self._refresh()
        return reply

    def reset(self) -> None:
        """Forget the conversation, keeping the system turn if there was one."""
        self.history = list(self._system)
        self._refresh()

    def transcript(self) -> str:
        """The conversation as `role: content` lines, for a static output where the widget is not kept."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.history)

    def _html(self) -> str:
        colors = {"user": "#e8f0fe", "assistant": "#f1f8e9", "system": "#f5f5f5"}
        bubbles = [f"<div style='background:{colors.get(m['role'], '#fff')};padding:6px 10px;margin:4px 0;"
                   f"border-radius:6px;white-space:pre-wrap'><b>{m['role']}</b>: {html.escape(m['content'])}"
                   "</div>"
                   for m in self.history]
        return "".join(bubbles) or "<i>Say something to the model.</i>"

    def _refresh(self) -> None:
        if self._widget is not None:
            self._log.value = self._html()

    @property
    def widget(self):
        """The ipywidgets UI: conversation, input box, Send / Reset, max tokens and temperature sliders."""
        if self._widget is None:
            import ipywidgets as w

            self._log = w.HTML(self._html(), layout=w.Layout(max_height="360px", overflow_y="auto"))
            # continuous_update=False: the value changes on Enter, which is when we want to send.
            box = w.Text(placeholder="Type a message and press Enter", continuous_update=False,
                         layout=w.Layout(width="70%"))
            send, reset = w.Button(description="Send", button_style="primary"), w.Button(description="Reset")
            tokens = w.IntSlider(self.max_new_tokens, min=8, max=512, step=8, description="max tokens")
            temp = w.FloatSlider(self.temperature, min=0.0, max=1.5, step=0.1, description="temperature")
            status = w.Label()

            def on_send(_=None):
                if not box.value.strip():
                    return
                self.max_new_tokens, self.temperature = tokens.value, temp.value
                text, box.value = box.value, ""
                status.value = "generating…"
                try:
                    self.send(text)
                finally:
                    status.value = ""

            send.on_click(on_send)
            box.observe(on_send, names="value")
            reset.on_click(lambda _: self.reset())
            self._widget = w.VBox([self._log, w.HBox([box, send, reset]), w.HBox([tokens, temp]), status])
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
