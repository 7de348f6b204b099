"""MemoRAGLite: the small-model, any-length entry point of the original API.

    pipe = MemoRAGLite()
    pipe.memorize(context, save_dir="state/book", print_stats=True)
    print(pipe("How do the main characters relate?"))

It is the MemoRAG pipeline on the embedded default models with compressed memory on:
a document of any length is chunked and indexed in full, while the memory holds a
compressed view of it that fits the model's window (see :mod:`memorag.longmem`).
"""

from __future__ import annotations

from memorag.pipeline import MemoRAG


class MemoRAGLite(MemoRAG):
    def __init__(self, gen_model_name_or_path: str | None = None, ret_model_name_or_path: str | None = "default",
                 customized_gen_model=None, ret_hit: int = 3, retrieval_chunk_size: int = 512,
                 compression: str = "extractive", beacon_ratio: float | None = None, **kwargs) -> None:
        kwargs.setdefault("mem_model_name_or_path", "default")
        super().__init__(ret_model_name_or_path=ret_model_name_or_path, gen_model_name_or_path=gen_model_name_or_path,
                         customized_gen_model=customized_gen_model, ret_hit=ret_hit,
                         retrieval_chunk_size=retrieval_chunk_size, beacon_ratio=beacon_ratio,
                         compression=compression, **kwargs)

    def __call__(self, query: str | None = None, context: str | None = None, task_type: str = "memorag",  # type: ignore[override]
                 prompt_template: str | None = None, max_new_tokens: int = 256, reset_each_call: bool = False,
                 use_memory_answer: bool = False) -> str:
        """``pipe(query)`` as in the original Lite API (the question comes first)."""
        return super().__call__(context=context, query=query, task_type=task_type, prompt_template=prompt_template,
                                max_new_tokens=max_new_tokens, reset_each_call=reset_each_call,
                                use_memory_answer=use_memory_answer)
