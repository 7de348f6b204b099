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


def _word_stream(text: str, consumed: list[str]):
    for word in text.split(" "):
        consumed.append(word)
        yield word + " "


def test_a_restarted_quote_stops_decoding_before_the_repeat_ends():
    line = "He was quite young, wonderfully handsome, extremely agreeable, and he meant to be at the assembly."
    consumed: list[str] = []
    lines = distinct_lines(_word_stream(f"{line}\n{line}\nNever seen", consumed), max_lines=4, min_words=4,
                           stop_on_restart=True)
    assert lines == [line]
    # the repeat was cut once five whole words and a sixth were out (its first word came in
    # the first line's last piece), not decoded to its end
    assert len(consumed) == len(line.split()) + 5
    assert "Never" not in consumed


def test_the_restart_stop_can_be_turned_off_with_the_same_lines(monkeypatch):
    import memorag.memory as memory

    line = "He was quite young, wonderfully handsome, extremely agreeable, and he meant to be at the assembly."
    monkeypatch.setattr(memory, "STOP_ON_RESTART", False)
    consumed: list[str] = []
    assert distinct_lines(_word_stream(f"{line}\n{line}\nNever seen", consumed), max_lines=4, min_words=4,
                          stop_on_restart=True) == [line]
    assert consumed[-1] == "assembly.\nNever"  # the whole repeat was read first


def test_a_new_sentence_sharing_a_start_with_a_kept_one_is_kept():
    first = "Mr. Bingley was good-looking and gentlemanlike."
    second = "Mr. Bingley was good friends with Mr. Darcy."  # four words shared, then different
    consumed: list[str] = []
    assert distinct_lines(_word_stream(f"{first}\n{second}\n", consumed), max_lines=4, min_words=4,
                          stop_on_restart=True) == [first, second]


def test_free_text_lines_sharing_a_long_start_are_all_kept():
    # questions often begin alike: only quotes (where five words name one sentence) stop early
    qs = ["What is the name of the man who rents Netherfield?", "What is the name of the man who visits Longbourn?"]
    assert distinct_lines(_word_stream("\n".join(qs), []), max_lines=4) == qs
    assert distinct_lines(_word_stream("\n".join(qs), []), max_lines=4, stop_on_restart=True) == qs[:1]


def test_a_restarted_chinese_quote_stops_too():
    kept = "宾利先生租下了尼日斐花园的房子。"
    pieces = [kept, "\n", *kept[:11], "不应读到"]
    consumed: list[str] = []

    def stream():
        for p in pieces:
            consumed.append(p)
            yield p

    assert distinct_lines(stream(), max_lines=4, stop_on_restart=True) == [kept]
    assert "不应读到" not in consumed


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
