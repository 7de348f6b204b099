"""Answer and retrieval metrics.

QA F1 and exact match follow the published LongBench / SQuAD definitions: lower-case,
drop punctuation and English articles, squeeze whitespace, then token-level F1 (max over
the gold answers). Chinese answers are compared on jieba words after removing
punctuation and spaces, as LongBench does for its Chinese tasks.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ZH_PUNCT = set("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def normalize_zh(s: str) -> str:
    s = s.lower()
    return "".join(ch for ch in s if ch not in _ZH_PUNCT and ch not in set(string.punctuation) and not ch.isspace())


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _tokens(s: str) -> list[str]:
    if _CJK.search(s):
        import jieba

        return [w for w in jieba.lcut(normalize_zh(s)) if w.strip()]
    return normalize_answer(s).split()


def qa_f1(prediction: str, answers: list[str]) -> float:
    """Max token F1 of ``prediction`` against any gold answer (Chinese via jieba)."""
    return max((_f1(_tokens(prediction), _tokens(a)) for a in answers), default=0.0)


def exact_match(prediction: str, answers: list[str]) -> float:
    norm = normalize_zh if _CJK.search(prediction + "".join(answers)) else normalize_answer
    return float(any(norm(prediction) == norm(a) for a in answers))


def match_score(prediction: str, answers: list[str], match: str = "any") -> float:
    """RULER's string match: "all" is the share of ``answers`` the prediction contains
    (every variable of a chain, every magic number); "any" is 1.0 if it contains one of
    them (aliases). Case-insensitive, on the raw text: answers here are codes and numbers."""
    pred = prediction.lower()
    found = [a.lower() in pred for a in answers]
    if not found:
        return 0.0
    return sum(found) / len(found) if match == "all" else float(any(found))


class _JiebaOrWords:
    """Tokenizer for rouge-score that keeps Chinese (its default drops non-ASCII)."""

    def tokenize(self, text: str) -> list[str]:
        return _tokens(text)


def rouge_l(prediction: str, references: list[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_JiebaOrWords())
    return max((scorer.score(r, prediction)["rougeL"].fmeasure for r in references), default=0.0)


def _squash(s: str) -> str:
    return " ".join(s.split())


def retrieved_gold(gold: list[list[str]], evidence: list[str]) -> list[bool]:
    """For each gold paragraph (given as the sentences that matter in it), whether the
    evidence contains it: every one of those sentences appears in some evidence chunk.

    Sentences rather than whole paragraphs, because a chunk boundary may fall inside a
    paragraph whose supporting sentence is still fully retrieved.
    """
    chunks = [_squash(e) for e in evidence]
    return [all(any(_squash(s) in c for c in chunks) for s in sents if s.strip()) for sents in gold]


def gold_only_from(gold: list[list[str]], evidence: list[str], found_by: list[Sequence[str]],
                   source: str = "memory") -> list[bool]:
    """For each gold paragraph: whether the evidence holds it only through chunks that
    ``source`` alone found (``found_by`` of each evidence chunk, memorag.retrieval.Hit):
    with those chunks taken out, the paragraph would be missing. What a memory added, not
    what a judge reordered."""
    others = [e for e, f in zip(evidence, found_by) if tuple(f) != (source,)]
    return [a and not b for a, b in zip(retrieved_gold(gold, evidence), retrieved_gold(gold, others))]


def recall_at_k(gold: list[list[str]], evidence: list[str]) -> float:
    hits = retrieved_gold(gold, evidence)
    return sum(hits) / len(hits) if hits else 0.0


def all_gold_at_k(gold: list[list[str]], evidence: list[str]) -> float:
    hits = retrieved_gold(gold, evidence)
    return float(bool(hits) and all(hits))


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def spans_in_document(spans: list[str], document: str) -> list[bool]:
    """Whether each recalled span stands in ``document`` word for word (case and white space folded)."""
    doc = _fold(document)
    return [_fold(s) in doc for s in spans]


def gold_quoted(spans: list[str], gold: list[list[str]], min_words: int = 4) -> list[bool]:
    """For each gold sentence: whether some span quotes it (holds it whole, or is a piece
    of it at least ``min_words`` long)."""
    folded = [_fold(s) for s in spans]
    flags = []
    for para in gold:
        for sentence in para:
            g = _fold(sentence)
            if g:
                flags.append(any(g in s or (s in g and len(s.split()) >= min_words) for s in folded))
    return flags
