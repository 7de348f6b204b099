import pytest

from memorag.eval.metrics import all_gold_at_k, exact_match, normalize_answer, qa_f1, recall_at_k, rouge_l

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


def test_normalisation_drops_case_punctuation_articles():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_f1_hand_checked():
    # pred tokens {new, york, city}, gold {new, york}: P=2/3, R=1, F1=0.8
    assert qa_f1("New York City", ["new york"]) == pytest.approx(0.8)
    assert qa_f1("Paris", ["London", "paris"]) == 1.0  # max over gold answers
    assert qa_f1("", ["x"]) == 0.0
    assert qa_f1("the", ["the"]) == 0.0  # only an article: nothing left to compare


def test_exact_match():
    assert exact_match("The Beatles.", ["the beatles"]) == 1.0
    assert exact_match("Beatles band", ["the beatles"]) == 0.0


def test_chinese_f1_uses_words():
    # jieba: 北京大学 | 的 | 学生  vs  北京大学 ; after punctuation removal
    assert qa_f1("北京大学的学生。", ["北京大学"]) == pytest.approx(0.5)
    assert exact_match("王德顺。", ["王德顺"]) == 1.0


def test_rouge_l():
    assert rouge_l("the cat sat on the mat", ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert 0 < rouge_l("the cat lay on a rug", ["the cat sat on the mat"]) < 1
    assert rouge_l("宾利先生很富有", ["宾利先生很富有"]) == pytest.approx(1.0)


def test_retrieval_recall_counts_contained_gold_sentences():
    gold = [["Alpha is a city in Texas."], ["Beta was founded in 1901.", "It has a port."]]
    evidence = ["... Alpha is a city\nin Texas. More text.", "Beta was founded in 1901. Other."]
    assert recall_at_k(gold, evidence) == 0.5  # second paragraph misses "It has a port."
    assert all_gold_at_k(gold, evidence) == 0.0
    assert all_gold_at_k(gold, evidence + ["It has a port."]) == 1.0


def test_runner_summary_and_table_report_rouge_l():
    from memorag.eval.runner import markdown_table, summarize

    rows = [{"method": "dense", "recall": 1.0, "all_gold": 1.0, "f1": 1.0, "em": 1.0, "rouge_l": 1.0, "seconds": 1.0,
             "match": 0.4},
            {"method": "dense", "recall": 0.0, "all_gold": 0.0, "f1": 0.0, "em": 0.0, "rouge_l": 0.5, "seconds": 1.0,
             "match": 1.0}]
    summary = summarize(rows, ["dense"], 5, retrieval_only=False)
    assert summary["dense"]["rouge_l"] == 0.75 and summary["dense"]["match"] == 0.7
    assert "match" in markdown_table(summary, 5, False).splitlines()[0]
    assert "rouge_l" in markdown_table(summary, 5, False).splitlines()[0]
    assert "rouge_l" not in summarize(rows, ["dense"], 5, retrieval_only=True)["dense"]


def test_match_score_all_is_the_share_found_and_any_needs_one():
    from memorag.eval.metrics import match_score

    chain = ["ABCDE", "QWERT", "ZXCVB"]
    assert match_score("abcde, qwert", chain, "all") == pytest.approx(2 / 3)
    assert match_score("ABCDE QWERT ZXCVB", chain, "all") == 1.0
    assert match_score("nothing here", chain, "all") == 0.0
    assert match_score("it was zxcvb", chain, "any") == 1.0
    assert match_score("anything", [], "all") == 0.0


def test_clue_quality_measures_quotes_and_gold_sentences():
    from memorag.eval.metrics import gold_quoted, spans_in_document

    doc = "Edda Quill kept the lamp.  The storm of 1903 broke the glass. Tomas rowed the mail boat."
    spans = ["the STORM of 1903 broke the glass.", "Edda Quill was a famous poet", "Tomas rowed"]
    assert spans_in_document(spans, doc) == [True, False, True]
    gold = [["Edda Quill kept the lamp."], ["The storm of 1903 broke the glass.", "Tomas rowed the mail boat."]]
    # whole sentence held -> quoted; "Tomas rowed" is a piece but under four words -> not
    assert gold_quoted(spans, gold) == [False, True, False]
    assert gold_quoted(["Tomas rowed the mail"], gold) == [False, False, True]
    assert gold_quoted([], gold) == [False, False, False]


def test_gold_only_from_the_memory_counts_what_its_chunks_alone_hold():
    """A gold paragraph counts for the memory only when the evidence would lack it without
    the chunks the memory alone found; one the question also found, or a chunk both found,
    is not the memory's; and the summary pools the flags over the gold paragraphs."""
    from memorag.eval.metrics import gold_only_from
    from memorag.eval.runner import markdown_table, summarize

    gold = [["Alpha is a city in Texas."], ["Beta was founded in 1901."], ["Gamma has a port."]]
    evidence = ["Alpha is a city in Texas.", "Beta was founded in 1901.", "Alpha is a city in Texas. More.",
                "Gamma has a port."]
    found_by = [("memory",), ("memory",), ("question",), ("question", "memory")]
    assert gold_only_from(gold, evidence, found_by) == [False, True, False]
    assert gold_only_from(gold, evidence, [("question",)] * 4) == [False, False, False]
    assert gold_only_from(gold, evidence[:1], [("memory",)]) == [True, False, False]
    rows = [{"method": "memorag", "recall": 1.0, "all_gold": 1.0, "seconds": 1.0,
             "gold_memory_only": [False, True, False]},
            {"method": "memorag", "recall": 1.0, "all_gold": 1.0, "seconds": 1.0, "gold_memory_only": [False]},
            {"method": "hybrid", "recall": 1.0, "all_gold": 1.0, "seconds": 1.0}]
    summary = summarize(rows, ["memorag", "hybrid"], 5, retrieval_only=True)
    assert summary["memorag"]["gold_memory_only"] == 0.25 and "gold_memory_only" not in summary["hybrid"]
    assert "gold_memory_only" in markdown_table(summary, 5, True).splitlines()[0]
