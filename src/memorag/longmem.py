"""Global memory for documents longer than the memory model's window.

The memory model can hold ``window`` tokens; a novel or a report collection holds far
more. We compress the document into a *memory text* that fits, then read that text into
the KV cache exactly like a short document. Two compressors, one parameter
(``compression``), one ratio (``ratio``, alias ``beacon_ratio``: document tokens per
memory token):

``extractive`` (default; no decoding, cost grows linearly and is tiny)
    Split the document into windows; inside each window keep the sentences with the most
    information (TF-IDF weight of their words, with a bonus for names and numbers, which
    questions hinge on, and one for a paragraph's opening sentence), in document order,
    until the window's share of the budget is used; a sentence repeated word for word is
    kept once. Every window keeps its share, so the memory covers the whole document, and a
    ``[Part i/N]`` marker keeps positions. A 1M-token document compresses in seconds.

``gist`` (decoding; better prose, ~30 s per 4K-token window on 2 cores)
    The memory model reads each window and writes a dense summary that keeps names,
    numbers, dates, places and events. Gists that still do not fit are compressed again,
    hierarchically. Each finished window's gist is saved at once under a key of (window
    text, model, settings), so an interrupted run resumes where it stopped and a document
    with text appended only pays for its new windows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memorag.errors import InputError
from memorag.llm.base import LLM
from memorag.models.packaged import cache_dir
from memorag.progress import progress_bar
from memorag.prompts import prompts_for

COMPRESSIONS = ("extractive", "gist")  # Memory also accepts "none": no compression
# Room left in the window for the memory prompt, a task and its answer.
HEADROOM = 1024

# Sentence ends keep their closing quote (so kept sentences stay verbatim).
_SENT = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+|(?<=[.!?\u3002\uff01\uff1f][\"'\u201d\u300d])\s+|\n{2,}")
_NAMEISH = re.compile(r"\b(?:[A-Z][a-z]+|\d[\d,.:/-]*)\b")
_REPEATED = float("-inf")  # the score of a sentence the memory holds already: never kept again
# A paragraph's opening sentence scores (1 + LEAD_BONUS) times its weight: it usually says what
# the paragraph is about. Measured by bench/extract_study.py (docs/evaluation.md, "What the
# memory holds"): more of the questions' supporting sentences end up in the 8K extract, with
# the bonus at 1 or 2 alike.
LEAD_BONUS = 1.0
# What decides which sentences an extract keeps (extractive_memory's defaults, the sentence
# split), for caches of memorized text: update it with any change to either, since that makes
# a different memory of the same document.
EXTRACTIVE_SELECTION = {"lead_bonus": LEAD_BONUS, "dedup": True, "sentences": "abbreviations do not end one"}


@dataclass
class CompressionStats:
    method: str
    windows: int = 0
    windows_computed: int = 0  # not found in the cache
    input_tokens: int = 0
    memory_tokens: int = 0
    levels: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def memory_budget(llm: LLM, n_tokens: int, ratio: float | None) -> int:
    """Tokens the memory text may use: the document / ratio, never more than the window allows."""
    room = llm.context_window - HEADROOM
    if room < 256:
        raise InputError(f"The memory model's window ({llm.context_window} tokens) is too small to hold a "
                         f"compressed memory; use a model or n_ctx with at least {HEADROOM + 256} tokens.")
    if ratio is None:
        return room
    if ratio < 1:
        raise InputError("compression ratio (beacon_ratio) must be >= 1")
    return max(256, min(room, int(n_tokens / ratio)))


def split_windows(llm: LLM, text: str, window_tokens: int) -> list[str]:
    """Cut ``text`` into consecutive windows of about ``window_tokens`` model tokens,
    at paragraph or sentence ends. Windows depend only on the text before them, so text
    appended to a document leaves every earlier window unchanged (and cached)."""
    units = [u for u in re.split(r"(\n{2,})", text)]
    windows: list[str] = []
    buf, buf_tokens = "", 0
    for unit in units:
        n = llm.count_tokens(unit) if unit.strip() else 0
        if n > window_tokens:  # one huge paragraph: fall back to sentences
            for sent in _SENT.split(unit):
                sn = llm.count_tokens(sent)
                if buf_tokens + sn > window_tokens and buf.strip():
                    windows.append(buf)
                    buf, buf_tokens = "", 0
                buf += sent + " "
                buf_tokens += sn
            continue
        if buf_tokens + n > window_tokens and buf.strip():
            windows.append(buf)
            buf, buf_tokens = "", 0
        buf += unit
        buf_tokens += n
    if buf.strip():
        windows.append(buf)
    return windows


# --------------------------------------------------------------- extractive
_SENT_KEEP = re.compile(f"({_SENT.pattern})")  # the same splits, separators kept
# A full stop after these is not a sentence end ("Mrs. Bennet", "Dr. Watson", "J. Smith").
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Capt|Col|Gen|Lt|Rev|Hon|Messrs|vs|etc|No|Vol|"
                           r"Fig|e\.g|i\.e)|\b[A-Z])\.$")


def _split(text: str) -> list[tuple[str, bool]]:
    """``text``'s sentences, each verbatim (an abbreviation's full stop does not end one),
    with whether it opens a paragraph (it starts the text or follows a line break)."""
    out: list[tuple[str, bool]] = []
    pieces = _SENT_KEEP.split(text)  # text, separator, text, separator, ...
    glue = False  # the last piece ended in an abbreviation: the next one continues its sentence
    pos = last_end = 0  # where pieces[i] starts in text; where the last sentence ended
    for i, raw in enumerate(pieces):
        start, pos = pos, pos + len(raw)
        piece = raw.strip() if i % 2 == 0 else ""
        if not piece:
            glue = glue and i % 2 == 1  # an empty piece between separators ends the sentence
            continue
        at = start + len(raw) - len(raw.lstrip())
        gap = text[last_end:at]  # white space only: the separator and the pieces' own edges
        if glue and out and "\n\n" not in gap:
            out[-1] = (out[-1][0] + gap + piece, out[-1][1])  # the document's own white space: verbatim
        else:
            out.append((piece, at == 0 or gap.rstrip(" \t").endswith("\n")))
        last_end = at + len(piece)
        glue = bool(_ABBREVIATION.search(piece))
    return out


def extract_sentences(text: str) -> list[str]:
    """``text``'s sentences as the extract cuts them (so each is verbatim in an extract that kept it)."""
    return [sent for sent, _ in _split(text)]


def _scores(sentences: list[str], language: str) -> list[float]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    if language == "zh":
        import jieba

        vec = TfidfVectorizer(tokenizer=lambda s: [w for w in jieba.lcut(s) if w.strip()], token_pattern=None,
                              sublinear_tf=True)
    else:
        vec = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    try:
        weights = vec.fit_transform(sentences)
    except ValueError:  # nothing but stop words
        return [0.0] * len(sentences)
    out = []
    for i, s in enumerate(sentences):
        row = weights.getrow(i)
        # Sum of TF-IDF weights rewards informative sentences; dividing by sqrt(length)
        # keeps long sentences from winning by size alone.
        base = float(row.sum()) / math.sqrt(max(1, len(s.split())))
        names = len(_NAMEISH.findall(s)) if language != "zh" else len(re.findall(r"\d+", s))
        out.append(base * (1.0 + 0.15 * min(names, 6)))
    return out


def extractive_memory(llm: LLM, text: str, budget: int, language: str,
                      progress: Callable[[int, int], None] | None = None, *,
                      lead_bonus: float = LEAD_BONUS, dedup: bool = True) -> tuple[str, CompressionStats]:
    """``lead_bonus``: a sentence that opens a paragraph scores (1 + lead_bonus) times its
    weight (a paragraph's first sentence usually says what it is about). ``dedup``: a
    sentence seen before in the document is not kept again (boilerplate, repeated filler)."""
    t0 = time.perf_counter()
    total = llm.count_tokens(text)
    n_windows = max(1, math.ceil(total / 2048))
    windows = split_windows(llm, text, math.ceil(total / n_windows))
    stats = CompressionStats("extractive", windows=len(windows), windows_computed=len(windows), input_tokens=total)
    scored = []
    seen: set[str] = set()
    for i, window in enumerate(windows):
        split = _split(window)
        sents = [sent for sent, _ in split]
        scores = _scores(sents, language) if len(sents) > 1 else [0.0]
        if lead_bonus:
            scores = [sc * (1.0 + lead_bonus) if lead else sc for sc, (_, lead) in zip(scores, split)]
        if dedup:
            repeated = []
            for sent in sents:
                repeated.append(sent in seen)
                seen.add(sent)
            scores = [_REPEATED if rep else sc for sc, rep in zip(scores, repeated)]
        scored.append((sents, [llm.count_tokens(s) for s in sents], scores))
        if progress:
            progress(i + 1, len(windows))
    # Markers and joins cost tokens too; if the first pass overshoots, shrink the share and redo.
    share = max(0.0, budget - 12 * len(windows)) / max(1, total)
    for _ in range(5):
        parts = []
        for i, (sents, lengths, scores) in enumerate(scored):
            quota = int(sum(lengths) * share)
            keep, used = set(), 0
            for j in sorted(range(len(sents)), key=lambda j: -scores[j]):
                if used + lengths[j] > quota or scores[j] == _REPEATED:
                    continue
                keep.add(j)
                used += lengths[j]
            marker = f"[第{i + 1}/{len(windows)}部分]" if language == "zh" else f"[Part {i + 1}/{len(windows)}]"
            # One sentence per line: a recalled quote (memorag.quoting) ends at a line break, so it
            # cannot join two sentences that were not next to each other in the document.
            parts.append("\n".join([marker, *(sents[j] for j in sorted(keep))]))
        memory_text = "\n".join(parts)
        stats.memory_tokens = llm.count_tokens(memory_text)
        if stats.memory_tokens <= budget:
            break
        share *= 0.9 * budget / stats.memory_tokens
    stats.levels = 1
    stats.seconds = time.perf_counter() - t0
    return memory_text, stats


# --------------------------------------------------------------------- gist
class GistCache:
    """One JSON file per finished window, written atomically as soon as it is done."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "gists"

    def key(self, llm: LLM, window: str, max_tokens: int, language: str) -> str:
        ident = json.dumps([llm.describe().get("fingerprint") or llm.describe().get("spec"), max_tokens, language],
                           sort_keys=True)
        return hashlib.sha256((ident + "\0" + window).encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        path = self.root / key[:2] / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))["gist"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, gist: str) -> None:
        path = self.root / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"gist": gist}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def gist_memory(llm: LLM, text: str, budget: int, language: str, *, window_tokens: int | None = None,
                max_gist_tokens: int = 384, cache: GistCache | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[str, CompressionStats]:
    t0 = time.perf_counter()
    cache = cache or GistCache()
    p = prompts_for(language)
    total = llm.count_tokens(text)
    stats = CompressionStats("gist", input_tokens=total)
    window_tokens = window_tokens or max(256, min(4096, llm.context_window - HEADROOM - 512))
    current = text
    while True:
        n = llm.count_tokens(current)
        if n <= budget:
            break
        windows = split_windows(llm, current, window_tokens)
        # Each gist gets its window's share of the budget (at least a sentence or two).
        per_gist = max(32, min(max_gist_tokens, window_tokens // 3, int(budget / len(windows))))
        stats.levels += 1
        gists = []
        for i, window in enumerate(windows):
            key = cache.key(llm, window, per_gist, language)
            gist = cache.get(key)
            if gist is None:
                llm.prefill(p.memory_prefix(window))
                gist = " ".join("".join(llm.continue_chat(p.gist, max_new_tokens=per_gist)).split())
                cache.put(key, gist)
                stats.windows_computed += 1
            stats.windows += 1
            gists.append(gist)
            if progress:
                progress(i + 1, len(windows))
        current = "\n".join(f"[Part {i + 1}/{len(gists)}] {g}" for i, g in enumerate(gists))
        if stats.levels > 4:  # gists stopped shrinking: cut rather than loop
            current = current[: int(len(current) * budget / max(1, llm.count_tokens(current)))]
            break
    stats.memory_tokens = llm.count_tokens(current)
    stats.seconds = time.perf_counter() - t0
    return current, stats


def compress(llm: LLM, text: str, *, method: str = "extractive", ratio: float | None = None, language: str = "en",
             progress: bool | Callable[[int, int], None] = False,
             cache: GistCache | None = None) -> tuple[str, CompressionStats]:
    """Return a memory text that fits the model's window, and what it cost.

    ``progress``: True draws a tqdm bar; a callable gets ``(windows_done, windows_total)``.
    """
    if method not in COMPRESSIONS:
        raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}; got {method!r}.")
    total = llm.count_tokens(text)
    budget = memory_budget(llm, total, ratio)
    with progress_bar(f"memory: {method} windows", "window", progress) as callback:
        if method == "extractive":
            return extractive_memory(llm, text, budget, language, callback)
        return gist_memory(llm, text, budget, language, cache=cache, progress=callback)
