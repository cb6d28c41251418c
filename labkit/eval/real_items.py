"""Build data_samples/eval/*_real.jsonl: real benchmark items, copied from pinned commits of the benchmarks'
public repositories, so an offline eval scores the same questions everybody else scores.

    python -m labkit.eval.real_items build --from /path/to/mirrors   # git dirs, or folders that hold them
    python -m labkit.eval.real_items list                            # what is shipped, from where, licence

Each source is pinned to a commit and to the sha256 of every file read from it, and the selection is a fixed
rule (the first N rows, or the first N of each MMLU subject), so a rebuild writes the same bytes or fails.
`--from` takes bare or working git directories (such as the mirrors `git clone --mirror` makes) or folders
whose subfolders are such directories; the builder uses the one that holds each source's commit.

The `protocol` of each task says how the published harnesses prompt and score it, for cards and for
bench/published_figures.py; labkit's own task prompts differ and say so in their modules.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

from labkit.errors import DataError


@dataclasses.dataclass(frozen=True)
class RealSource:
    """Where one task's real items come from and how they were chosen.

    Args:
        task: the eval task they serve ("gsm8k").
        repo: the GitHub repository read ("owner/name") at `commit`.
        files: the paths read in the repository at `commit`.
        sha256: the sha256 of those files' bytes, concatenated in order.
        licence: the data's licence, as its authors state it.
        origin: the authors' own repository and file, when `repo` is a copy of it.
        selection: the rule that picks the shipped rows, in words.
        rows: how many rows the rule yields.
        protocol: how the published harnesses prompt and score the task.
    """

    task: str
    repo: str
    commit: str
    files: tuple[str, ...]
    sha256: str
    licence: str
    origin: str
    selection: str
    rows: int
    protocol: str

    @property
    def file_name(self) -> str:
        return f"{self.task}_real.jsonl"


GSM8K_TEST_ROWS = 250
GSM8K_TRAIN_ROWS = 8      # the harness's 5 shots are the first 5; a few more let gsm8k_shots go up to 8
MMLU_PER_SUBJECT = 5

_MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing "
    "medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions").split()

SOURCES: dict[str, RealSource] = {s.task: s for s in (
    RealSource(
        "gsm8k", "openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c",
        ("grade_school_math/data/test.jsonl", "grade_school_math/data/train.jsonl"),
        "82b9941c2317fec851220018ca56c4363f63f7c91d9e9855b4e0845d1289be6e",
        "MIT (Cobbe et al., 2021; © OpenAI)", "openai/grade-school-math",
        f"the first {GSM8K_TEST_ROWS} of the 1319 test problems (id = position in the test split) and the "
        f"first {GSM8K_TRAIN_ROWS} train problems (split 'train', few-shot examples)",
        GSM8K_TEST_ROWS + GSM8K_TRAIN_ROWS,
        "lm-evaluation-harness gsm8k (v3): 'Question: {question}\\nAnswer:' then ' {answer}', 5 shots = the "
        "first 5 train rows joined by blank lines, no chat template, greedy until 'Question:' / '</s>' / "
        "'<|im_end|>' (256 tokens); strict-match = first '#### n', flexible-extract = last number, exact "
        "match after removing ',', '$', a final '.'. lighteval (SmolLM2 card, 'GSM8K 5-shot'): the same "
        "prompt, 5 shots sampled at random from train, 256 tokens, stop at 'Question:', quasi-exact match "
        "of the first '#### n' (commas removed)."),
    RealSource(
        "mmlu", "HaeChan0305/MLILAB-FedLLM", "d92730e8bacd7b3a61e551e015e40588e10234b4",
        tuple(f"data/mmlu/test/{s}_test.csv" for s in _MMLU_SUBJECTS),
        "beb70992dc542f455829a80d5f9122ef438ce720c64b74ce28fa0714d6229c39",
        "MIT (Hendrycks et al., 2021)",
        "hendrycks/test (its data tarball is not in git; this copy holds all 14042 test rows, "
        "converted to index answers with a header row)",
        f"the first {MMLU_PER_SUBJECT} test questions of each of the 57 subjects (id = position in the "
        "test set ordered by subject, as cais/mmlu 'all' orders it)",
        MMLU_PER_SUBJECT * len(_MMLU_SUBJECTS),
        "lighteval mmlu_cf ('MMLU cloze', SmolLM2 card): 'The following are questions about {subject}.\\n"
        "Question: {question}\\nAnswer:' scored by the log-likelihood of ' {choice}' divided by its length "
        "in characters (acc_norm_nospace), 0-shot, no chat template, macro = micro here (5 per subject). "
        "lm-evaluation-harness mmlu: '{question}\\nA. …\\nD. …\\nAnswer:' after 'The following are "
        "multiple choice questions (with answers) about {subject}.', log-likelihood of ' A'..' D', "
        "usually run 5-shot with the subject's dev questions."),
    RealSource(
        "ifeval", "Podtech-AI/IFEval", "5bdf377eb9cc20f16d377dc5c38413cee22550a6",
        ("data/input_data.jsonl",), "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49",
        "Apache-2.0 (Zhou et al., 2023; Google)",
        "google-research/google-research instruction_following_eval/data/input_data.jsonl "
        "(this commit is a byte-identical copy: 207111 bytes, 541 rows)",
        "all 541 prompts", 541,
        "IFEval (google-research; lighteval and lm-evaluation-harness 'ifeval'): the prompt alone as one "
        "user turn through the chat template, greedy; prompt-level and instruction-level accuracy, strict "
        "and loose; 25 instruction types. The SmolLM2 card reports the mean of prompt- and instruction-level "
        "accuracy (lighteval)."),
    RealSource(
        "safety", "paul-rottger/exaggerated-safety", "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d",
        ("xstest_prompts.csv",), "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a",
        "CC-BY-4.0 (XSTest v2; Röttger et al., NAACL 2024)", "paul-rottger/exaggerated-safety",
        "all 450 prompts (250 safe, 200 unsafe)", 450,
        "XSTest: the prompt alone as a user turn, the reply classified as full compliance / full refusal / "
        "partial refusal, by hand or by the authors' GPT-4 or string-match classifiers; labkit uses a "
        "string match on the reply's opening, reporting refusal rate on unsafe and over-refusal on safe."),
)}


# ----- reading a pinned source ------------------------------------------------------------------------

def _git(repo_dir: Path, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True)
    if done.returncode:
        raise DataError(str(repo_dir), None, None,
                        f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    return done.stdout


def _git_dirs(roots: list[Path]) -> list[Path]:
    """Each root if it is a git directory, else its subfolders (two levels down) that are."""
    found = []
    for root in roots:
        candidates = [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))] if root.is_dir() else []
        for c in candidates:
            if c.is_dir() and subprocess.run(["git", "-C", str(c), "rev-parse", "--git-dir"],
                                             capture_output=True).returncode == 0:
                found.append(c)
                if c == root:
                    break
    return found


def _holder(source: RealSource, dirs: list[Path]) -> Path:
    for d in dirs:
        if subprocess.run(["git", "-C", str(d), "cat-file", "-e", f"{source.commit}^{{commit}}"],
                          capture_output=True).returncode == 0:
            return d
    raise DataError(source.repo, None, None,
                    f"no directory given with --from holds commit {source.commit[:12]}; bring in "
                    f"github.com/{source.repo} (a clone or a mirror) and pass its git directory")


def read_source(source: RealSource, repo_dir: Path) -> dict[str, str]:
    """Path -> text of each of the source's files at its commit, checked against the recorded sha256."""
    blobs = {path: _git(repo_dir, "show", f"{source.commit}:{path}") for path in source.files}
    got = hashlib.sha256(b"".join(blobs.values())).hexdigest()
    if got != source.sha256:
        raise DataError(f"{source.repo}@{source.commit[:12]}", None, None,
                        f"sha256 {got[:16]}… of {len(blobs)} file(s) differs from the recorded "
                        f"{source.sha256[:16]}…")
    return {path: data.decode("utf-8") for path, data in blobs.items()}


# ----- one builder per task ---------------------------------------------------------------------------------

def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def gsm8k_rows(files: dict[str, str]) -> list[dict]:
    test = _jsonl(files["grade_school_math/data/test.jsonl"])
    train = _jsonl(files["grade_school_math/data/train.jsonl"])
    if len(test) != 1319 or len(train) != 7473:
        raise DataError("grade_school_math/data", None, None, f"{len(test)} test / {len(train)} train rows; "
                        "GSM8K has 1319 / 7473")
    rows = [{"id": str(i), "question": r["question"], "answer": r["answer"], "split": "test"}
            for i, r in enumerate(test[:GSM8K_TEST_ROWS])]
    return rows + [{"id": f"train-{i}", "question": r["question"], "answer": r["answer"], "split": "train"}
                   for i, r in enumerate(train[:GSM8K_TRAIN_ROWS])]


# Rows per subject in MMLU's test split (14042 in all): checks the copy is whole before ids are counted.
_MMLU_TOTAL = 14042


def mmlu_rows(files: dict[str, str]) -> list[dict]:
    rows, offset, total = [], 0, 0
    for subject in _MMLU_SUBJECTS:  # alphabetical, the order of cais/mmlu "all"
        path = f"data/mmlu/test/{subject}_test.csv"
        table = list(csv.reader(io.StringIO(files[path])))
        header, body = table[0], table[1:]
        if header != ["question", "choice0", "choice1", "choice2", "choice3", "answer"]:
            raise DataError(path, 0, None, f"unexpected header {header}")
        for i, rec in enumerate(body[:MMLU_PER_SUBJECT]):
            rows.append({"id": str(offset + i), "question": rec[0], "subject": subject,
                         "choices": rec[1:5], "answer": int(rec[5])})
        offset += len(body)
        total += len(body)
    if total != _MMLU_TOTAL:
        raise DataError("data/mmlu/test", None, None, f"{total} rows; MMLU's test split has {_MMLU_TOTAL}")
    return rows


def ifeval_rows(files: dict[str, str]) -> list[dict]:
    return [{k: r[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
            for r in _jsonl(files["data/input_data.jsonl"])]


def safety_rows(files: dict[str, str]) -> list[dict]:
    return [{"id": r["id"], "prompt": r["prompt"], "type": r["type"], "label": r["label"],
             "focus": r["focus"], "note": r["note"]}
            for r in csv.DictReader(io.StringIO(files["xstest_prompts.csv"]))]


BUILDERS = {"gsm8k": gsm8k_rows, "mmlu": mmlu_rows, "ifeval": ifeval_rows, "safety": safety_rows}


def build(roots: list[str | Path], out: str | Path | None = None) -> dict[str, int]:
    """Write every task's `<task>_real.jsonl` into `out` (data_samples/eval) from the git directories under
    `roots`; returns rows per file. Fails, writing nothing, when a commit, file hash or row count is off."""
    from labkit.data.io import write_jsonl
    from labkit.eval.tasks import FIXTURES_DIR

    out = Path(out) if out is not None else FIXTURES_DIR
    dirs = _git_dirs([Path(r) for r in roots])
    built = {}
    for task, source in SOURCES.items():
        rows = BUILDERS[task](read_source(source, _holder(source, dirs)))
        if len(rows) != source.rows:
            raise DataError(source.file_name, None, None, f"{len(rows)} rows built, {source.rows} expected")
        built[source.file_name] = rows
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in built.items():
        write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in built.items()}


def main(argv: list[str] | None = None) -> int:
    """`build --from DIR…` writes the files; `list` prints each task's source, licence and selection."""
    parser = argparse.ArgumentParser(prog="python -m labkit.eval.real_items",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write data_samples/eval/*_real.jsonl from pinned git commits")
    b.add_argument("--from", dest="roots", nargs="+", required=True,
                   help="git directories, or folders whose subfolders are git directories")
    b.add_argument("--out", default=None, help="output folder (default: data_samples/eval)")
    sub.add_parser("list", help="print the shipped items' sources, licences and selection rules")
    args = parser.parse_args(argv)
    if args.command == "build":
        for name, n in build(args.roots, args.out).items():
            print(f"{name}: {n} rows")
        return 0
    for s in SOURCES.values():
        print(f"{s.file_name}: {s.rows} rows from github.com/{s.repo}@{s.commit[:12]} ({s.licence}); "
              f"{s.selection}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
