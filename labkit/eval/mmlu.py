"""MMLU: four-option multiple choice, scored by the log-likelihood of the option letters and by a generated
letter.

Rows use cais/mmlu's schema: `question`, `subject`, `choices` (4 strings), `answer` (index 0-3). The prompt
lists the question and the options as "A. …" to "D. …" and asks for the letter alone, as one user turn
through the chat template.

- loglik (`accuracy_loglik`): one forward pass per row over the templated prompt; the next-token
  log-probabilities of the four letters are compared and the highest wins (a tie splits the credit, see
  score_logprobs). This is how the original MMLU harness scores, and it needs one pass per row instead of
  four: only the letters compete, so a model that would rather chat than answer still gets a score, and
  `letter_mass` in the info says how much of its probability actually went to a letter. The scored tokens
  are the bare letters "A".."D", because a chat reply starts right after the assistant header with no
  space; the original harness scores " A" because its prompt ends in "Answer:". (With SmolLM2's tokenizer
  "A" and " A" are both single tokens, different ones: 49 and 330.) A tokenizer that splits a letter into
  several tokens gets the slower equivalent: each letter is scored as a continuation of the prompt, the
  sum of its tokens' log-probabilities. In bfloat16 the log-probs move by up to ~0.3 nats with how a
  batch is padded, enough to flip close calls: compare models on a few dozen items in float32.
- generate (`accuracy_generate`): a greedy reply of a few tokens, read by `parse_choice`. A model that
  knows the answer but does not say it in a readable form loses here, which is what a user would see; the
  share of replies naming no option is `invalid_generate` in the info.
- cloze (`accuracy_cloze`): the "MMLU (cloze)" of SmolLM2's model card (lighteval's mmlu_cf). The options are
  not shown: plain text, no chat template, "The following are questions about <subject>.\nQuestion: …\n
  Answer:", and each option's text (with a leading space) is scored as a continuation; the pick is the
  highest summed log-probability divided by the option's length in characters (lighteval's
  acc_norm_nospace; the scorer is labkit.eval.cloze, shared with HellaSwag and ARC). Four scored
  continuations per row, so about four times the cost of loglik. A small model that cannot yet map an
  answer to a letter still shows what it knows here.

Slices: subject.
"""

from __future__ import annotations

import math
import numbers
import re

import torch

from labkit.config import EvalConfig
from labkit.data.chat import encode
from labkit.errors import DataError
from labkit.eval import cloze
from labkit.eval.tasks import (
    Metric,
    Scored,
    Task,
    TaskOutput,
    fixture_label,
    letter_ids,
    load_hub,
    read_fixture,
    register,
    require_fields,
    rows_from,
    subsample,
)
from labkit.models.generate import as_prompt_text, generate
from labkit.models.logprobs import masked_logps

HUB = "cais/mmlu"
FIXTURE = "data_samples/eval/mmlu.jsonl"
LETTERS = "ABCD"
GENERATE_TOKENS = 16  # enough for "The answer is (B)." and then some; the letter is what is read


def question_text(row: dict) -> str:
    """The user turn for one row: subject, question, lettered options, and the request for a letter."""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    subject = row["subject"].replace("_", " ")
    return ("The following is a multiple choice question about "
            f"{subject}.\n\n{row['question']}\n{options}\n\nAnswer with the letter of the correct option "
            "only.")


# ---- loglik ------------------------------------------------------------------------------------------------

def scoring_method(tok) -> str:
    """How loglik mode scores: "next_token" when each of A-D is one token (one pass per row),
    else "continuation"."""
    try:
        letter_ids(tok, LETTERS)
    except ValueError:
        return "continuation"
    return "next_token"


@torch.inference_mode()
def _next_token_logprobs(model, prompts: list[list[int]], ids: list[int], pad_id: int,
                         batch_size: int) -> list[list[float]]:
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        # Right padding keeps every real token at its natural position (no position_ids needed, so models with
        # absolute position embeddings read it right too); the prediction is taken at each row's last token.
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, p in enumerate(chunk):
            input_ids[row, :len(p)] = torch.tensor(p)
            attention[row, :len(p)] = 1
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        last = torch.tensor([len(p) - 1 for p in chunk], device=logits.device)           # [B]
        final = logits[torch.arange(len(chunk), device=logits.device), last].float()    # [B, V]
        out += final.log_softmax(-1)[:, ids].tolist()                                    # [B, 4]
    return out


def _continuation_logprobs(model, tok, prompts: list[list[int]], pad_id: int,
                           batch_size: int) -> list[list[float]]:
    conts = [tok.encode(letter, add_special_tokens=False) for letter in LETTERS]
    seqs = [p + c for p in prompts for c in conts]
    masks = [[0] * len(p) + [1] * len(c) for p in prompts for c in conts]
    totals = [lp for lp, _ in masked_logps(model, seqs, masks, pad_id=pad_id, batch_size=batch_size)]
    return [totals[i:i + len(LETTERS)] for i in range(0, len(totals), len(LETTERS))]


def letter_logprobs(model, tok, rows: list[dict], batch_size: int = 8,
                    method: str | None = None) -> list[list[float]]:
    """log p(letter | templated prompt) for A-D, one list of 4 per row.

    method: "next_token" (read from one forward pass), "continuation" (score each letter appended to the
    prompt; works for letters of any token length), or None to pick by the tokenizer (scoring_method).
    """
    method = method or scoring_method(tok)
    prompts = [encode(tok, as_prompt_text(tok, question_text(r))) for r in rows]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if method == "next_token":
        return _next_token_logprobs(model, prompts, letter_ids(tok, LETTERS), pad_id, batch_size)
    if method == "continuation":
        return _continuation_logprobs(model, tok, prompts, pad_id, batch_size)
    raise ValueError(f"unknown method {method!r}: use 'next_token' or 'continuation'")


# ---- cloze -------------------------------------------------------------------------------------------

def cloze_prompt(row: dict) -> str:
    """The cloze context for one row: plain text ending in "Answer:"; the options are not listed."""
    subject = row["subject"].replace("_", " ")
    return f"The following are questions about {subject}.\nQuestion: {row['question']}\nAnswer:"


def cloze_options(row: dict) -> list[str]:
    """The continuations scored in cloze mode: each option's text after a space."""
    return [" " + str(c) for c in row["choices"]]


def cloze_logprobs(model, tok, rows: list[dict], batch_size: int = 8) -> list[list[float]]:
    """Per row, the summed log-probability of each option's text (" " + option) after cloze_prompt
    (labkit.eval.cloze.choice_logprobs: a merge across the boundary is scored as the model reads the whole
    text)."""
    return cloze.choice_logprobs(model, tok, [cloze_prompt(r) for r in rows],
                                 [cloze_options(r) for r in rows], batch_size)


def score_cloze(rows: list[dict], logprobs: list[list[float]]) -> list[Scored]:
    """`accuracy_cloze`: the answer's option has the highest log-probability per character (a tie that
    includes it scores 1/k, as in score_logprobs; labkit.eval.cloze.score_choices)."""
    if len(rows) != len(logprobs):
        raise ValueError(f"{len(rows)} rows but {len(logprobs)} log-prob lists")
    return [Scored("accuracy_cloze", str(r.get("id", i)),
                   cloze.score_choices(lp, cloze_options(r), r["answer"]), {"subject": str(r["subject"])})
            for i, (r, lp) in enumerate(zip(rows, logprobs))]


# ---- generate ----------------------------------------------------------------------------------------------

# A letter standing alone: not inside a word, a number or a contraction ("A's", "D-Day", "B12").
_LETTER = re.compile(r"(?<![\w'’])(\()?([A-Da-d])(\))?(?![\w'’-])")
# Text that announces the letter right after it: "The answer is", "Answer:", "option", "choice".
_ANNOUNCED = re.compile(r"(?i)\b(?:answer(?:\s+is)?|option|choice)\s*[:=]?\s*(?:option\s*|choice\s*)?[*_]*$")
# Words after a sentence-initial capital A that show it names option A ("A or B", "A is correct"),
# not the article.
_NOT_ARTICLE = {"or", "and", "is", "because", "since", "as", "seems", "would"}


def _letter_at(text: str, m: re.Match) -> bool:
    """Whether a standalone letter match names an option (see parse_choice for the rules)."""
    before, after = text[:m.start()], text[m.end():]
    if m.group(1) and m.group(3):                       # "(c)"
        return True
    if m.group(3) or (re.match(r"[.:]", after) and not before.strip()):
        return True                                      # "b) Paris", "b. Paris" at the start
    if not after.strip(" .:;!?*_\n") and not before.strip(" *_"):
        return True                                      # the whole reply is one letter: "a", "B."
    # otherwise lower case must be announced and stand alone
    if m.group(2).islower():
        return bool(_ANNOUNCED.search(before)) and not re.match(r"\s*[A-Za-z]", after)
    if m.group(2) == "A" and re.match(r"\s+([a-z]+)", after) and not _ANNOUNCED.search(before) \
            and re.search(r"(?:^|[.!?:\n])[\s*_]*$", before):
        return re.match(r"\s+([a-z]+)", after).group(1) in _NOT_ARTICLE  # "A good guess is …" is the article
    return True


def parse_choice(text: str, choices: list[str]) -> int | None:
    """The option (0-3) a free-text reply picks, or None when it names none.

    In order:
    1. A letter the reply announces ("The answer is B.", "Answer: (c)", "option D")
    wins over any other letter,
       so "A is tempting, but the answer is C" reads as C.
    2. Else the first standalone letter that names an option: any capital A-D ("B", "**C**", "I think A or
       B" -> A, the first one named: a hedge is scored as its first pick rather than dropped), a bracketed or
       marked lower-case one ("(c)", "b) Paris", "b. Paris" at the start), or a reply that is only a letter
       ("a"). A capital "A" that opens a sentence before a lower-case word ("A hexagon has six sides") is read
       as the article, unless the word is one like "or"/"is" ("A or B", "A is correct").
    3. Else the option whose text the reply contains (case-insensitive, whole words: "Paris"),
    when exactly one
       does; an option contained in another named one ("Light" in "Light years") does not count separately.
       Several options named ("Paris or Lyon") give None.
    """
    letters = [m for m in _LETTER.finditer(text) if _letter_at(text, m)]
    announced = [m for m in letters if _ANNOUNCED.search(text[:m.start()])]
    if letters:
        return LETTERS.index((announced or letters)[0].group(2).upper())
    lowered = text.lower()
    named = [i for i, c in enumerate(choices) if str(c).strip()
             and re.search(r"(?<!\w)" + re.escape(str(c).strip().lower()) + r"(?!\w)", lowered)]
    named = [i for i in named if not any(j != i and str(choices[i]).strip().lower() in str(choices[j]).lower()
                                         for j in named)]
    return named[0] if len(named) == 1 else None


# ---- scoring -----------------------------------------------------------------------------------------------

def score_rows(rows: list[dict], picks: list[int | None], metric: str) -> list[Scored]:
    """1.0 per row whose pick is the answer (None, no pick, scores 0), sliced by subject."""
    if len(rows) != len(picks):
        raise ValueError(f"{len(rows)} rows but {len(picks)} picks")
    return [Scored(metric, str(r.get("id", i)), float(p == r["answer"]), {"subject": str(r["subject"])})
            for i, (r, p) in enumerate(zip(rows, picks))]


def score_replies(rows: list[dict], replies: list[str]) -> list[Scored]:
    """`accuracy_generate` for free-text replies (parse_choice on each)."""
    if len(rows) != len(replies):
        raise ValueError(f"{len(rows)} rows but {len(replies)} replies")
    return score_rows(rows, [parse_choice(t, r["choices"]) for t, r in zip(replies, rows)],
                      "accuracy_generate")


def top_letters(logprobs: list[float]) -> list[int]:
    """The options sharing the highest log-probability (usually one)."""
    best = max(logprobs)
    return [i for i, lp in enumerate(logprobs) if lp == best]


def score_logprobs(rows: list[dict], logprobs: list[list[float]]) -> list[Scored]:
    """`accuracy_loglik`: 1.0 when the answer's letter has the highest log-probability.

    A tie between k letters that includes the answer scores 1/k, the expected score of breaking it at random.
    Ties are not rare in bfloat16, whose logits are spaced 0.125 apart at magnitudes of 16-32: a small model
    fine-tuned on letters tied its top letters on 15 of the 42 fixture rows. Counting a tie for the earliest
    letter, as argmax does, would hand those rows to option A.
    """
    if len(rows) != len(logprobs):
        raise ValueError(f"{len(rows)} rows but {len(logprobs)} log-prob lists")
    scores = []
    for i, (r, lp) in enumerate(zip(rows, logprobs)):
        top = top_letters(lp)
        scores.append(Scored("accuracy_loglik", str(r.get("id", i)),
                             1 / len(top) if r["answer"] in top else 0.0,
                             {"subject": str(r["subject"])}))
    return scores


# ---- rows --------------------------------------------------------------------------------------------------

def fixture_rows() -> list[dict]:
    """42 easy questions over six subjects, written for labkit; the right option's position cycles A-D."""
    raw = [
        ("elementary_mathematics", "What is 7 times 8?", "56", ["54", "64", "48"]),
        ("elementary_mathematics", "What is half of 90?", "45", ["40", "35", "50"]),
        ("elementary_mathematics", "How many sides does a hexagon have?", "6", ["5", "8", "7"]),
        ("elementary_mathematics", "What is 100 minus 37?", "63", ["73", "67", "53"]),
        ("elementary_mathematics", "Which number is prime?", "13", ["9", "15", "21"]),
        ("elementary_mathematics", "What is 3 squared?", "9", ["6", "12", "27"]),
        ("elementary_mathematics", "What fraction is equal to 0.5?", "1/2", ["1/4", "2/3", "1/5"]),
        ("high_school_geography", "What is the capital of France?", "Paris", ["Lyon", "Madrid", "Rome"]),
        ("high_school_geography", "Which is the largest ocean on Earth?", "The Pacific Ocean",
         ["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"]),
        ("high_school_geography", "On which continent is Egypt?", "Africa",
         ["Asia", "Europe", "South America"]),
        ("high_school_geography", "What is the capital of Japan?", "Tokyo", ["Kyoto", "Osaka", "Seoul"]),
        ("high_school_geography", "Which river flows through London?", "The Thames",
         ["The Seine", "The Danube", "The Nile"]),
        ("high_school_geography", "Which is the largest country by area?", "Russia",
         ["Canada", "China", "Brazil"]),
        ("high_school_geography", "The Sahara is a large what?", "Desert",
         ["Forest", "Lake", "Mountain range"]),
        ("high_school_biology", "Which organ pumps blood around the body?", "The heart",
         ["The lungs", "The liver", "The kidneys"]),
        ("high_school_biology", "What gas do plants take in for photosynthesis?", "Carbon dioxide",
         ["Oxygen", "Nitrogen", "Helium"]),
        ("high_school_biology", "What is the basic unit of life?", "The cell",
         ["The atom", "The organ", "The tissue"]),
        ("high_school_biology", "Which part of a plant takes up water from the soil?", "The roots",
         ["The flowers", "The leaves", "The seeds"]),
        ("high_school_biology", "How many legs does an insect have?", "Six", ["Four", "Eight", "Ten"]),
        ("high_school_biology", "What do bees collect from flowers to make honey?", "Nectar",
         ["Pollen only", "Sap", "Water"]),
        ("high_school_biology", "Which blood cells carry oxygen?", "Red blood cells",
         ["White blood cells", "Platelets", "Plasma"]),
        ("computer_science", "What does CPU stand for?", "Central processing unit",
         ["Computer power unit", "Central program utility", "Core processing user"]),
        ("computer_science", "How many bits are in a byte?", "8", ["4", "16", "2"]),
        ("computer_science", "Which of these is a programming language?", "Python", ["HTML", "JPEG", "HTTP"]),
        ("computer_science", "What number does the binary 101 stand for?", "5", ["3", "6", "101"]),
        ("computer_science", "Which data structure works first in, first out?", "A queue",
         ["A stack", "A tree", "A set"]),
        ("computer_science", "What does RAM stand for?", "Random access memory",
         ["Read append memory", "Rapid array module", "Remote access machine"]),
        ("computer_science", "Which value is a boolean?", "True", ["3.14", "'hello'", "[1, 2]"]),
        ("world_history", "Who was the first person to walk on the Moon?", "Neil Armstrong",
         ["Yuri Gagarin", "Buzz Aldrin", "John Glenn"]),
        ("world_history", "Which ancient people built the pyramids of Giza?", "The Egyptians",
         ["The Romans", "The Vikings", "The Aztecs"]),
        ("world_history", "In which century did the First World War begin?", "The 20th century",
         ["The 18th century", "The 19th century", "The 21st century"]),
        ("world_history", "Which city was the centre of the Roman Empire?", "Rome",
         ["Athens", "Cairo", "Paris"]),
        ("world_history", "Who painted the Mona Lisa?", "Leonardo da Vinci",
         ["Vincent van Gogh", "Pablo Picasso", "Claude Monet"]),
        ("world_history", "What did the Wright brothers build and fly in 1903?", "An aeroplane",
         ["A steam train", "A rocket", "A submarine"]),
        ("world_history", "Which wall fell in 1989?", "The Berlin Wall",
         ["Hadrian's Wall", "The Great Wall of China", "The Western Wall"]),
        ("physics", "What force pulls objects towards the Earth?", "Gravity",
         ["Magnetism", "Friction", "Tension"]),
        ("physics", "At what temperature does water boil at sea level?", "100 degrees Celsius",
         ["50 degrees Celsius", "0 degrees Celsius", "200 degrees Celsius"]),
        ("physics", "What is the unit of electrical resistance?", "The ohm",
         ["The volt", "The watt", "The newton"]),
        ("physics", "Which travels faster?", "Light", ["Sound", "A jet plane", "A bullet"]),
        ("physics", "What do we call the energy of a moving object?", "Kinetic energy",
         ["Potential energy", "Chemical energy", "Nuclear energy"]),
        ("physics", "What does a thermometer measure?", "Temperature", ["Mass", "Speed", "Pressure"]),
        ("physics", "Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Earth"]),
    ]
    rows = []
    for i, (subject, q, right, wrong) in enumerate(raw):
        pos = i % 4
        choices = wrong[:pos] + [right] + wrong[pos:]
        rows.append({"question": q, "subject": subject, "choices": choices, "answer": pos})
    return rows


def validate(rows: list[dict], source: str) -> None:
    """cais/mmlu's schema: DataError naming the first row and field that breaks it."""
    require_fields(rows, ("question", "subject", "choices", "answer"), source)
    for i, r in enumerate(rows):
        for field in ("question", "subject"):
            if not isinstance(r[field], str) or not r[field].strip():
                raise DataError(source, i, field, f"expected non-empty text, got {r[field]!r:.60}")
        choices = r["choices"]
        if (not isinstance(choices, (list, tuple)) or len(choices) != 4
                or not all(isinstance(c, str) for c in choices)):
            raise DataError(source, i, "choices", f"expected a list of 4 option strings, got {choices!r:.80}")
        answer = r["answer"]
        if isinstance(answer, bool) or not isinstance(answer, numbers.Integral) or not 0 <= answer <= 3:
            raise DataError(source, i, "answer", f"expected the right option's index 0-3, got {answer!r}")


def load(cfg: EvalConfig) -> list[dict]:
    """Rows from cais/mmlu ("all", test), the shipped real items or the fixture, checked, each with an `id`
    (its position in the source, so cards with different limits still pair item by item), subsampled by
    cfg.limit."""
    used = {}

    def hub() -> list[dict]:
        used["source"] = f"{HUB} (all, test)"
        return load_hub(HUB, name="all", split="test")

    def fixture() -> list[dict]:
        used["source"] = fixture_label("mmlu")
        return read_fixture("mmlu")

    rows = rows_from(cfg.source, fixture, hub, "mmlu")
    # outside rows_from: under "auto" a bad hub row fails instead of falling back
    validate(rows, used["source"])
    rows = [{**r, "answer": int(r["answer"]), "id": str(r.get("id", i))} for i, r in enumerate(rows)]
    return subsample(rows, cfg.limit, cfg.seed)


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    """Score the rows in each mode of cfg.mmlu_modes; only the enabled modes' metrics appear."""
    modes = {m.strip() for m in cfg.mmlu_modes.split(",") if m.strip()}
    scores: list[Scored] = []
    info: dict = {}
    samples = [{"prompt": question_text(r), "target": LETTERS[r["answer"]]} for r in rows]
    if "loglik" in modes:
        method = scoring_method(tok)
        lps = letter_logprobs(model, tok, rows, cfg.batch_size, method)
        loglik = score_logprobs(rows, lps)
        scores += loglik
        mass = [sum(math.exp(x) for x in lp) for lp in lps]
        info.update(loglik_method=method, letter_mass=sum(mass) / len(mass) if mass else math.nan,
                    loglik_ties=sum(len(top_letters(lp)) > 1 for lp in lps))
        for sample, lp, s in zip(samples, lps, loglik):
            sample.update(loglik_pick="=".join(LETTERS[j] for j in top_letters(lp)), loglik_score=s.score)
    if "cloze" in modes:
        cloze = score_cloze(rows, cloze_logprobs(model, tok, rows, cfg.batch_size))
        scores += cloze
        for sample, s in zip(samples, cloze):
            sample.update(cloze_score=s.score)
    if "generate" in modes:
        n_tokens = min(cfg.max_new_tokens, GENERATE_TOKENS)
        replies = [g.text for g in generate(model, tok, [question_text(r) for r in rows],
                                            max_new_tokens=n_tokens, batch_size=cfg.batch_size)]
        picks = [parse_choice(t, r["choices"]) for t, r in zip(replies, rows)]
        scores += score_rows(rows, picks, "accuracy_generate")
        info.update(invalid_generate=sum(p is None for p in picks) / len(picks) if picks else math.nan,
                    generate_tokens=n_tokens)
        for sample, reply, pick, r in zip(samples, replies, picks, rows):
            sample.update(output=reply, generate_pick="-" if pick is None else LETTERS[pick],
                          generate_score=float(pick == r["answer"]))
    return TaskOutput(scores, samples, info)


TASK = register(Task(
    "mmlu",
    (Metric("accuracy_loglik", True,
            "the letter with the highest log-probability after the prompt is the answer"),
     Metric("accuracy_generate", True, "the greedy reply names the answer (a letter, or the option's text)"),
     Metric("accuracy_cloze", True,
            "the answer's text has the highest log-likelihood per character (MMLU cloze, no options shown)")),
    load, run,
    about="four-option multiple choice, by letter log-likelihood, by generation and as a cloze, by subject",
))
