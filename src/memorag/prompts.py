"""Prompts, in English and Chinese, written for this project.

The memory prompt is a *prefix*: a system message plus a user turn that holds the
document and is left open. Each task (recall, rewrite, answer, summarize) is appended to
that user turn, so the document is read once and every task reuses its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memorag.llm.base import ChatMessage


@dataclass(frozen=True)
class PromptSet:
    memory_system: str
    memory_intro: str  # precedes the document inside the open user turn
    recall: str  # {question}
    rewrite: str  # {question}
    answer: str  # {question}
    summarize: str
    gist: str  # compress one window into a dense summary (used for long documents)
    gen_system: str
    gen_qa: str  # {evidence} {question}
    gen_memorag: str  # {evidence} {question}
    gen_cited: str  # {evidence} (numbered) {question}: the answer cites the numbers it used
    gen_summary: str  # {evidence} {points}
    gen_full: str  # {context} {question}
    hyde: str  # {question}

    def memory_prefix(self, document: str) -> list[ChatMessage]:
        """The memory's prefix: the system message and the open user turn holding ``document``."""
        return [{"role": "system", "content": self.memory_system},
                {"role": "user", "content": self.memory_intro + document}]


EN = PromptSet(
    memory_system=(
        "You have read the document the user gives you and remember it closely: names, "
        "numbers, places, events and who did what."
    ),
    memory_intro="Here is a document to remember. Questions about it come afterwards.\n\n<document>\n",
    # The instruction before the question: the memory then reads it once per document (the
    # next question finds it in the KV cache after the document) instead of once per question.
    recall=(
        "\n</document>\n\nQuote, word for word, the sentences from the document that help answer the "
        "question below. Give up to 4 short quotes, one per line, nothing else.\n\nQuestion: {question}"
    ),
    rewrite=(
        "\n</document>\n\nQuestion: {question}\n\n"
        "To answer this from the document, what must be looked up? Write up to 3 short, specific "
        "questions, one per line, that name the people, places, works or things involved."
    ),
    answer="\n</document>\n\nQuestion: {question}\n\nAnswer in a few words, using the document.",
    summarize=(
        "\n</document>\n\nList the key points of the document, one per line: the main people, "
        "places, events, dates and numbers, and how they relate. At most 8 lines."
    ),
    gist=(
        "\n</document>\n\nRewrite this part of the document as a dense summary that keeps every "
        "name, number, date, place and event, in the order they appear."
    ),
    gen_system="You answer questions using only the evidence given. Be brief and exact.",
    gen_qa="Evidence:\n{evidence}\n\nQuestion: {question}\nAnswer in a few words:",
    gen_memorag="Evidence:\n{evidence}\n\nQuestion: {question}\nAnswer in a few words:",
    gen_cited=("Evidence, numbered:\n{evidence}\n\nQuestion: {question}\n"
               "Answer in a few words, then cite the evidence you used by its number, like [1]."),
    gen_summary=(
        "Evidence:\n{evidence}\n\nKey points noted while reading:\n{points}\n\n"
        "Write a concise summary of the whole document from the evidence and the key points."
    ),
    gen_full="Document:\n{context}\n\nQuestion: {question}\nAnswer in a few words:",
    hyde="Write a short passage that answers this question, as an encyclopedia would: {question}",
)

ZH = PromptSet(
    memory_system="你已经仔细读过用户给出的文档，记得其中的人名、数字、地点、事件以及谁做了什么。",
    memory_intro="下面是一篇需要记住的文档，之后会有关于它的问题。\n\n<文档>\n",
    recall=(
        "\n</文档>\n\n请从文档中逐字摘录有助于回答下面问题的句子，最多 4 条，每行一条，不要写其他内容。\n\n"
        "问题：{question}"
    ),
    rewrite=(
        "\n</文档>\n\n问题：{question}\n\n"
        "要根据文档回答这个问题，需要查找哪些信息？请写出最多 3 个简短、具体的问题，每行一个，"
        "写明涉及的人物、地点、作品或事物。"
    ),
    answer="\n</文档>\n\n问题：{question}\n\n请根据文档用简短的话回答。",
    summarize=(
        "\n</文档>\n\n请逐行列出文档的要点：主要人物、地点、事件、日期和数字，以及它们之间的关系。最多 8 行。"
    ),
    gist="\n</文档>\n\n请把这部分文档改写成一段紧凑的摘要，按出现顺序保留所有人名、数字、日期、地点和事件。",
    gen_system="你只根据给出的证据回答问题，回答简短准确。",
    gen_qa="证据：\n{evidence}\n\n问题：{question}\n简短回答：",
    gen_memorag="证据：\n{evidence}\n\n问题：{question}\n简短回答：",
    gen_cited="编号的证据：\n{evidence}\n\n问题：{question}\n请简短回答，并用编号注明所依据的证据，例如 [1]。",
    gen_summary="证据：\n{evidence}\n\n阅读时记下的要点：\n{points}\n\n请根据证据和要点，为整篇文档写一段简洁的摘要。",
    gen_full="文档：\n{context}\n\n问题：{question}\n简短回答：",
    hyde="请像百科全书那样写一小段文字来回答这个问题：{question}",
)

PROMPTS = {"en": EN, "zh": ZH}


def prompts_for(language: str) -> PromptSet:
    return PROMPTS.get(language, EN)


def fill(template: str, **values: str) -> str:
    """Put ``values`` into ``{name}`` fields of ``template``, leaving every other brace alone.

    str.format would choke on braces inside user templates (e.g. JSON examples).
    """
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template
