"""Checks for notebook 00b (before you fine-tune): what few-shot costs, and an instruction rung."""

from __future__ import annotations

from labkit.exercises import close, exercise, number, wrong

ROW = {"messages": [{"role": "user", "content": "Ann has 3 apples and buys 4 more. How many now?"},
                    {"role": "assistant", "content": "3 + 4 = 7\n#### 7"}], "answer": "7"}


@exercise("00b.1", hints=["Extra tokens per question = few-shot prompt tokens − zero-shot prompt tokens.",
                          "Then multiply by the number of questions, 1000."])
def extra_tokens(answer, *, zero_shot: float, few_shot: float) -> str:
    extra = number(answer, "a number of tokens")
    expected = 1000 * (few_shot - zero_shot)
    if close(extra, 1000 * few_shot, rel=0.02):
        wrong("that is every few-shot prompt token; the question asks for the extra ones over zero-shot")
    if close(extra, few_shot - zero_shot, rel=0.02):
        wrong("that is the extra per question; the question asks for 1000 questions")
    if not close(extra, expected, rel=0.02):
        wrong(f"{extra:g} is not 1000 × (few-shot − zero-shot) prompt tokens per question")
    return (f"≈ {expected:,.0f} tokens: the examples are paid again on every question, for as long as the "
            "prompt is in service, while a fine-tune's cost is paid once.")


@exercise("00b.2", hints=["Return a list of turns: a {'role': 'system', ...} turn, then question(row).",
                          "[{'role': 'system', 'content': 'Show the sum, then a last line #### n.'}, "
                          "*question(row)]"])
def instruction_prompt(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function of one row, got {type(answer).__name__}")
    turns = answer(ROW)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        wrong(f"it should return a list of {{'role', 'content'}} turns, got {turns!r}")
    if not turns or turns[0].get("role") != "system":
        wrong("the first turn should be the system instruction")
    if "####" not in str(turns[0].get("content", "")):
        wrong("the instruction should show the format it asks for: a last line `#### n`")
    if turns[1:] != ROW["messages"][:1]:
        wrong("after the instruction comes the question, unchanged (and never the answer turn)")
    return ("an instruction costs a few dozen tokens per question, far fewer than worked examples; score it "
            "with score_rung to see whether a 135M model follows instructions as well as it copies examples.")
