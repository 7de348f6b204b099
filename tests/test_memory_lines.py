import pytest

from memorag.memory import clean_line, distinct_lines

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


def test_clean_line_strips_markers_and_drops_preambles():
    assert clean_line("1. Who is Mr. Bingley?") == "Who is Mr. Bingley?"
    assert clean_line('- "Netherfield Park is let at last."') == "Netherfield Park is let at last."
    assert clean_line("Here are the quotes:") == ""
    assert clean_line("Yes") == ""  # too short to search with
    assert clean_line("二、宾利先生是谁？") == "宾利先生是谁？"


def test_distinct_lines_stops_at_first_repeat():
    pieces = ["Bingley rents Netherfield.\n", "He has five thousand a year.\n", "Bingley rents Netherfield.\n", "Never seen"]
    consumed = []

    def stream():
        for p in pieces:
            consumed.append(p)
            yield p

    assert distinct_lines(stream(), max_lines=10) == ["Bingley rents Netherfield.", "He has five thousand a year."]
    assert "Never seen" not in consumed  # generation was cut at the loop


def test_distinct_lines_catches_loops_inside_one_line_and_respects_abbreviations():
    text = "Mr. Bennet visits Mr. Bingley. Mrs. Bennet is pleased. Mr. Bennet visits Mr. Bingley. Again"
    assert distinct_lines(iter([text]), 10) == ["Mr. Bennet visits Mr. Bingley.", "Mrs. Bennet is pleased."]


def test_distinct_lines_chinese_and_max_lines():
    assert distinct_lines(iter(["他租下了庄园。他很富有。他租下了庄园。"]), 10) == ["他租下了庄园。", "他很富有。"]
    assert len(distinct_lines(iter(["a b\nc d\ne f\ng h\n"]), 2)) == 2


def test_clue_lines_are_unique():
    from memorag.memory import Clues

    c = Clues("q", spans=["Aladin was a consultant.", "Aladin was a consultant!"], questions=["Who is Aladin?"],
              answer="Aladin was a consultant.")
    assert c.lines() == ["Aladin was a consultant.", "Who is Aladin?"]


def test_distinct_lines_cuts_a_list_item_loop_that_never_ends_a_sentence():
    # Seen from the 0.5B memory model on HotpotQA: one name repeated until the token limit.
    consumed = []

    def stream():
        yield "Who played Corliss Archer?\n"
        for _ in range(200):
            consumed.append(1)
            yield "Robert James Belushi, "

    assert distinct_lines(stream(), max_lines=10) == ["Who played Corliss Archer?", "Robert James Belushi"]
    assert len(consumed) < 10  # decoding stopped at the loop, not at the token limit
    # Ordinary lists are left alone.
    assert distinct_lines(iter(["Jane, Elizabeth, Mary, Kitty and Lydia are sisters.\n"]), 5) == [
        "Jane, Elizabeth, Mary, Kitty and Lydia are sisters."]
