"""Build data_samples/eval/*_real.jsonl: real benchmark items, copied from pinned commits of the benchmarks'
public repositories, so an offline eval scores the same questions everybody else scores.

    python -m labkit.eval.real_items build --from /path/to/mirrors   # git dirs, or folders that hold them
    python -m labkit.eval.real_items list                            # what is shipped, from where, licence

Each source is pinned to a commit and to the sha256 of every file read from it, and the selection is a fixed
rule (the first N rows, or the first N of each MMLU subject), so a rebuild writes the same bytes or fails.
Where the only readable copy is not the authors' own file (HellaSwag, ARC), a second, independent copy (the
source's `witness`, pinned the same way) is read too, and every shipped row must agree with it.
`--from` takes bare or working git directories (such as the mirrors `git clone --mirror` makes) or folders
whose subfolders are such directories; the builder uses the one that holds each source's commit.

The `protocol` of each task says how the published harnesses prompt and score it, for cards and for
bench/published_figures.py; labkit's own task prompts differ and say so in their modules.
"""

from __future__ import annotations

import argparse
import bz2
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
class Witness:
    """A second copy of a source's data, read only to check the shipped rows against it.

    Args:
        repo, commit, files, sha256: as in RealSource.
        licence: the licence of what is read (nothing of it is shipped).
        check: what it holds and what is checked against it, in words.
    """

    repo: str
    commit: str
    files: tuple[str, ...]
    sha256: str
    licence: str
    check: str


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
        witness: an independent copy the rows are checked against (see Witness), or None.
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
    witness: Witness | None = None

    @property
    def file_name(self) -> str:
        return f"{self.task}_real.jsonl"


GSM8K_TEST_ROWS = 250
GSM8K_TRAIN_ROWS = 8      # the harness's 5 shots are the first 5; a few more let gsm8k_shots go up to 8
MMLU_PER_SUBJECT = 5
HELLASWAG_ROWS = 300      # every WikiHow row of the copy (87), then its first ActivityNet rows
HELLASWAG_COPY_ROWS = 1000
HELLASWAG_VAL_ROWS = 10042
ARC_PER_SUBSET = 200
ARC_TEST_ROWS = {"ARC-Easy": 2376, "ARC-Challenge": 1172}

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
    RealSource(
        "hellaswag", "RubriksCube/rubriks_cube", "45e617d6ca9e5a158a280f0da0f7a44f7c8dbb8c",
        ("data/hellaswag.jsonl",), "79b87117cffba9878961284f233797c5ebeba4193cb48a93eabc4a5a1156cc45",
        "MIT (Zellers et al., 2019)",
        "rowanz/hellaswag data/hellaswag_val.jsonl (that 12 MB file is in no snapshot the builder can read; "
        "this copy, made for the CUBE dataset (Galvan-Sosa et al., ACL 2025), holds 1000 of its 10042 rows "
        "verbatim: 913 ActivityNet, 87 WikiHow)",
        f"every WikiHow row of the copy (87) and its first {HELLASWAG_ROWS - 87} ActivityNet rows, in the "
        "order of the validation split (id = position in it, found in the witness)",
        HELLASWAG_ROWS,
        "lighteval hellaswag as SmolLM2's card runs it (github.com/huggingface/smollm "
        "text/evaluation/tasks.py; Rowan/hellaswag validation, all 10042 rows): query = "
        "preprocess(activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize() + ' '), options ' ' + "
        "preprocess(ending), where preprocess turns ' [title]' into "
        "'. ', drops the other '[…]' tags ([header], [step], [substeps]) and makes double spaces single; "
        "0-shot, no chat template; the query's trailing space moves to the front of each option "
        "(tok_encode_pair); the pick is the highest log-likelihood divided by the option's length in "
        "characters (acc_norm_nospace). lm-evaluation-harness hellaswag: the same prompt with the text "
        "stripped and no trailing space, acc_norm.",
        Witness("klosax/hellaswag_text_data", "1105d370f8340eac3c63a91fd1fa58e8999f9505",
                ("hellaswag_val_full.txt.bz2",),
                "50b637899e4263c2bc456c2dc726c95d2c8cd8e2a552ea5bd7719ce3cb03fe5b",
                "MIT (HellaSwag's; the repository's own MIT file was removed at this commit)",
                "all 10042 validation rows in the split's order, in llama.cpp's text format (activity label "
                "and ctx with WikiHow tags removed, the gold index, the 4 endings): each of the copy's 1000 "
                "rows must match exactly one of them, ActivityNet rows among the first 3243")),
    RealSource(
        "arc", "zhaoxlpku/HKU-DASC7606-A2", "fcca017f3468a25901ad298913e976c42ad9165e",
        ("data/ARC-Easy-test.jsonl", "data/ARC-Challenge-test.jsonl"),
        "caee1d284fdb24e8d9b60f6aae58676d665a2f05a359c0c5a62d532b5b271504",
        "CC-BY-SA-4.0 (Clark et al., 2018; AI2)",
        "allenai/ai2_arc, the Hugging Face conversion of AI2's ARC-V1-Feb2018 (question.stem and "
        "question.choices flattened to question and choices); this copy holds both test splits whole, "
        "2376 Easy and 1172 Challenge rows, in their order",
        f"the first {ARC_PER_SUBSET} test questions of ARC-Easy and the first {ARC_PER_SUBSET} of "
        "ARC-Challenge (`subset` says which; id = AI2's question id)",
        2 * ARC_PER_SUBSET,
        "lighteval arc as SmolLM2's card runs it (ai2_arc ARC-Easy and ARC-Challenge test, all 2376 + 1172 "
        "rows): 'Question: {question}\\nAnswer:' then ' {choice}' for each option's text, 0-shot, no chat "
        "template, the highest log-likelihood divided by the option's length in characters "
        "(acc_norm_nospace); the card's ARC is the mean of the Easy and Challenge accuracies. "
        "lm-evaluation-harness arc_easy / arc_challenge: the same prompt and options, acc_norm.",
        Witness("mosaicml/llm-foundry", "8c8dd48f72168c5d51e2f7b151595892a8fba43d",
                ("scripts/eval/local_data/world_knowledge/arc_easy.jsonl",
                 "scripts/eval/local_data/world_knowledge/arc_challenge.jsonl"),
                "567e9fd35dcdd45ca64857a529fd5e3c1a71a50b8bc9fcbecf8913cce62a5a2d",
                "Apache-2.0 (the repository); the ARC rows in it CC-BY-SA-4.0",
                "both test splits in MosaicML's ICL format, in the same order: every row's question must "
                "match, and its options and answer where it has four options lettered A-D (all but 108 Easy "
                "and 28 Challenge rows: MosaicML pads or cuts options to four and reads numbered answers "
                "differently)")),
)}


# Printed under the real-items table of data_samples/eval/README.md (labkit.eval.fixtures.readme).
NOTICES = {
    "arc_real.jsonl": "`arc_real.jsonl` is ARC's data, adapted (a selection with a `subset` field) and "
                      "shared under its licence, CC BY-SA 4.0 (Attribution-ShareAlike): credit Clark et al., "
                      "\"Think you have Solved Question Answering? Try ARC, the AI2 Reasoning Challenge\" "
                      "(2018), and share changes to this file under CC BY-SA 4.0. That licence covers this "
                      "file only, not labkit's code.",
}


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


def _holder(source: RealSource | Witness, dirs: list[Path]) -> Path:
    for d in dirs:
        if subprocess.run(["git", "-C", str(d), "cat-file", "-e", f"{source.commit}^{{commit}}"],
                          capture_output=True).returncode == 0:
            return d
    raise DataError(source.repo, None, None,
                    f"no directory given with --from holds commit {source.commit[:12]}; bring in "
                    f"github.com/{source.repo} (a clone or a mirror) and pass its git directory")


def read_blobs(source: RealSource | Witness, repo_dir: Path) -> dict[str, bytes]:
    """Path -> bytes of each of the source's files at its commit, checked against the recorded sha256."""
    blobs = {path: _git(repo_dir, "show", f"{source.commit}:{path}") for path in source.files}
    got = hashlib.sha256(b"".join(blobs.values())).hexdigest()
    if got != source.sha256:
        raise DataError(f"{source.repo}@{source.commit[:12]}", None, None,
                        f"sha256 {got[:16]}… of {len(blobs)} file(s) differs from the recorded "
                        f"{source.sha256[:16]}…")
    return blobs


def read_source(source: RealSource | Witness, repo_dir: Path) -> dict[str, str]:
    """Path -> text of each of the source's files at its commit, checked against the recorded sha256."""
    return {path: data.decode("utf-8") for path, data in read_blobs(source, repo_dir).items()}


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


def _llama_cpp_text(text: str) -> str:
    """HellaSwag text as the witness's llama.cpp format writes it: WikiHow tags removed (" [title]" -> ". "),
    double spaces made single, one leading space dropped."""
    for tag, repl in (("[header]", ""), ("[step]", ""), ("[substeps]", ""), (" [title]", ". "),
                      ("[title] ", ""), ("[title].", ""), ("  ", " ")):
        text = text.replace(tag, repl)
    return text[1:] if text.startswith(" ") else text


def _hellaswag_witness(data: bytes) -> list[tuple[str, str, tuple[str, ...]]]:
    """(context line, gold index, endings) of each validation row, in order, from the witness's text file:
    six lines per row."""
    lines = bz2.decompress(data).decode("utf-8").split("\n")
    if lines[-1] != "" or (len(lines) - 1) % 6:
        raise DataError("hellaswag_val_full.txt", None, None, "not six lines per row")
    return [(lines[i], lines[i + 1], tuple(lines[i + 2:i + 6])) for i in range(0, len(lines) - 1, 6)]


def hellaswag_rows(files: dict[str, str], witness: dict[str, bytes]) -> list[dict]:
    from labkit.eval.hellaswag import VALIDATION_MIX, source

    copy = _jsonl(files["data/hellaswag.jsonl"])
    val = _hellaswag_witness(witness["hellaswag_val_full.txt.bz2"])
    if len(val) != HELLASWAG_VAL_ROWS or len(copy) != HELLASWAG_COPY_ROWS:
        raise DataError("hellaswag", None, None, f"{len(copy)} rows in the copy, {len(val)} in the "
                        f"witness; expected {HELLASWAG_COPY_ROWS} and HellaSwag's {HELLASWAG_VAL_ROWS} "
                        "validation rows")
    where: dict[tuple, list[int]] = {}
    for pos, key in enumerate(val):
        where.setdefault(key, []).append(pos)
    placed = []
    for i, r in enumerate(copy):
        key = (f"{_llama_cpp_text(r['activity_label'])}: {_llama_cpp_text(r['ctx'])}", str(r["label"]),
               tuple(_llama_cpp_text(e) for e in r["endings"]))
        hits = where.get(key, [])
        if len(hits) != 1:
            raise DataError("data/hellaswag.jsonl", i, None,
                            f"matches {len(hits)} validation rows of the witness")
        if (hits[0] < VALIDATION_MIX["activitynet"]) != (source(r) == "activitynet"):
            raise DataError("data/hellaswag.jsonl", i, "source_id", f"{r['source_id']} sits at validation "
                            f"row {hits[0]}; the first {VALIDATION_MIX['activitynet']} are ActivityNet's")
        placed.append((hits[0], r))
    wikihow = [(pos, r) for pos, r in placed if source(r) == "wikihow"]
    activitynet = [(pos, r) for pos, r in placed if source(r) == "activitynet"]
    activitynet = activitynet[:HELLASWAG_ROWS - len(wikihow)]
    return [{"id": str(pos), **r} for pos, r in sorted(wikihow + activitynet, key=lambda t: t[0])]


def arc_rows(files: dict[str, str], witness: dict[str, bytes]) -> list[dict]:
    rows = []
    for subset, name in (("ARC-Easy", "arc_easy"), ("ARC-Challenge", "arc_challenge")):
        path = f"data/{subset}-test.jsonl"
        test = _jsonl(files[path])
        theirs = _jsonl(witness[f"scripts/eval/local_data/world_knowledge/{name}.jsonl"].decode("utf-8"))
        if len(test) != ARC_TEST_ROWS[subset] or len(theirs) != len(test):
            raise DataError(path, None, None, f"{len(test)} rows, the witness {len(theirs)}; ARC's {subset} "
                            f"test split has {ARC_TEST_ROWS[subset]}")
        for i, (r, w) in enumerate(zip(test, theirs)):
            texts, labels = r["choices"]["text"], r["choices"]["label"]
            agree = w["query"] == f"Question: {r['question']}"
            if labels == list("ABCD"):
                agree = agree and w["choices"] == texts and w["gold"] == labels.index(r["answerKey"])
            if not agree:
                raise DataError(path, i, None, f"question {r['id']} differs from the witness's row {i}")
        rows += [{"id": r["id"], "subset": subset, "question": r["question"], "choices": r["choices"],
                  "answerKey": r["answerKey"]} for r in test[:ARC_PER_SUBSET]]
    return rows


BUILDERS = {"gsm8k": gsm8k_rows, "mmlu": mmlu_rows, "ifeval": ifeval_rows, "safety": safety_rows,
            "hellaswag": hellaswag_rows, "arc": arc_rows}


def build(roots: list[str | Path], out: str | Path | None = None) -> dict[str, int]:
    """Write every task's `<task>_real.jsonl` into `out` (data_samples/eval) from the git directories under
    `roots`; returns rows per file. Fails, writing nothing, when a commit, file hash or row count is off."""
    from labkit.data.io import write_jsonl
    from labkit.eval.tasks import FIXTURES_DIR

    out = Path(out) if out is not None else FIXTURES_DIR
    dirs = _git_dirs([Path(r) for r in roots])
    built = {}
    for task, source in SOURCES.items():
        files = read_source(source, _holder(source, dirs))
        if source.witness is None:
            rows = BUILDERS[task](files)
        else:
            rows = BUILDERS[task](files, read_blobs(source.witness, _holder(source.witness, dirs)))
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
