"""The evaluation runner: memorize each haystack once (cached, resumable), run every
method on every question, write JSON; the CLI prints :func:`markdown_table` of the summary.

A haystack is read into the memory model only when some method asks the memory for clues
(and they are not replayed with ``clues_from``); otherwise it is only chunked and indexed,
which is all the question-only methods and replayed clues search (the config's
``memory_read`` says which)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from memorag.config import DEFAULT_EVIDENCE, DEFAULT_PLAN, Evidence, evidence_key
from memorag.errors import MemoRAGError
from memorag.eval import datasets
from memorag.eval.methods import METHODS, PLAN_METHODS, MethodRunner, method_plans, methods_read_memory
from memorag.eval.metrics import (
    all_gold_at_k,
    exact_match,
    gold_only_from,
    gold_quoted,
    match_score,
    qa_f1,
    recall_at_k,
    rouge_l,
    spans_in_document,
)
from memorag.longmem import EXTRACTIVE_SELECTION
from memorag.memory import Clues
from memorag.models.packaged import cache_dir
from memorag.models.registry import default_window
from memorag.pipeline import MemoRAG
from memorag.plans import check_plan_params, plan_clue_kinds, plan_options
from memorag.progress import progress_bar
from memorag.retrieval import RetrievalState
from memorag.store import StateError, load_consistent, write_save_dir


def decoding_settings() -> dict:
    """The module switches that change what the memory writes or how the judge scores, as
    this run had them (not part of the resume key: rows of a resumed run may predate a change)."""
    import memorag.llm.llamacpp as llamacpp
    import memorag.memory as memory
    import memorag.quoting as quoting

    return {"quoting.COMPLETE_UNIQUE": quoting.COMPLETE_UNIQUE, "memory.STOP_ON_RESTART": memory.STOP_ON_RESTART,
            "llamacpp.JUDGE_SEQUENCES": llamacpp.JUDGE_SEQUENCES}

def parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise datasets.DatasetError(f"Unknown method(s) {', '.join(bad) or '(none)'}: choose from {', '.join(METHODS)}.")
    return methods


def haystack_dir(root: Path, haystack: datasets.Haystack, pipe: MemoRAG) -> Path:
    # The memory's task adapter is left out: it never touches the memorized state, so the
    # base model and the base with an adapter share one memorized haystack.
    memory = {k: v for k, v in pipe.memory.llm.describe().items() if k not in ("adapter", "spec")}
    # the extract's sentence selection too: a new one reads a different memory of the haystack
    compression = [pipe.memory.compression] + ([EXTRACTIVE_SELECTION] if pipe.memory.compression == "extractive" else [])
    models = json.dumps([memory, pipe.embedder.describe(), pipe.retriever.chunk_tokens,
                         pipe.memory.llm.context_window, *compression], sort_keys=True)
    key = hashlib.sha256((haystack.text + models).encode()).hexdigest()[:16]
    return root / f"{haystack.id}-{key}"


def index_dir(root: Path, haystack: datasets.Haystack, pipe: MemoRAG) -> Path:
    """Where a haystack's chunks and index alone are cached (a haystack no method reads into
    the memory): keyed by the text, the embedder and the chunk size only."""
    models = json.dumps([pipe.embedder.describe(), pipe.retriever.chunk_tokens], sort_keys=True)
    key = hashlib.sha256((haystack.text + models).encode()).hexdigest()[:16]
    return root / f"{haystack.id}-index-{key}"


def load_or_memorize(pipe: MemoRAG, root: Path, haystack: datasets.Haystack, progress: bool) -> float | None:
    """Put ``haystack`` into ``pipe``: its saved state under ``root`` if there is one (None),
    else memorized and saved there (the seconds it took)."""
    hdir = haystack_dir(root, haystack, pipe)
    t = time.perf_counter()
    try:
        pipe.load(hdir)
        state = pipe.memory.state
        # Saved before memorag kept the document beside an extract: its quotes would come
        # from the extract alone, not what ask does today.
        if state is None or not (state.compression and state.document is None):
            return None
    except StateError:
        pass
    pipe.memorize(haystack.text, save_dir=hdir, progress=progress)
    return time.perf_counter() - t


def index_haystack(pipe: MemoRAG, root: Path, haystack: datasets.Haystack,
                   progress: bool = False) -> tuple[RetrievalState, str, float]:
    """The chunks and index of ``haystack`` without reading it into the memory: from its
    memorized save dir when there is one, else from its index-only cache, else built (and
    cached). Returns the state, where it came from, and the seconds building it took (0
    when read)."""
    for where, d in (("memorized haystack", haystack_dir(root, haystack, pipe)),
                     ("index cache", index_dir(root, haystack, pipe))):
        try:
            return load_consistent(d, pipe.read_retrieval), where, 0.0
        except StateError:
            pass  # not there (or unreadable): the next place, or build it
    t = time.perf_counter()
    # The language the memorized pipeline would have read it in (memorag.pipeline's memorize)
    with progress_bar("index: embedding", "passage", progress) as bar:
        state = pipe.retriever.prepare(haystack.text, progress=bar, language=pipe.memory.language_for(haystack.text))
    seconds = time.perf_counter() - t

    def fill(tmp: Path) -> dict:
        info = pipe.retriever.save(tmp / "retrieval", state)
        return {"models": {"embedder": pipe.embedder.describe()}, "language": state.language,
                "chunks": info["n_chunks"], "retrieval": info}

    write_save_dir(index_dir(root, haystack, pipe), fill)
    return state, "built", seconds


def summarize(rows: list[dict], methods: list[str], k: int, retrieval_only: bool) -> dict:
    out = {}
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        agg: dict[str, float | int] = {"n": len(rs)}
        if m != "full":
            agg[f"recall@{k}"] = round(sum(r["recall"] for r in rs) / len(rs), 4)
            agg[f"all_gold@{k}"] = round(sum(r["all_gold"] for r in rs) / len(rs), 4)
        quotes = [f for r in rs for f in r.get("spans_in_document", [])]
        if any("gold_quoted" in r for r in rs):  # methods whose memory recalled spans
            golds = [f for r in rs for f in r.get("gold_quoted", [])]
            agg["spans_in_document"] = round(sum(quotes) / len(quotes), 4) if quotes else 0.0
            agg["gold_quoted"] = round(sum(golds) / len(golds), 4) if golds else 0.0
            agg["spans_per_question"] = round(len(quotes) / len(rs), 2)
        flags = [f for r in rs for f in r.get("gold_memory_only", [])]
        if flags:  # the share of gold paragraphs the evidence holds only through the memory's chunks
            agg["gold_memory_only"] = round(sum(flags) / len(flags), 4)
        if not retrieval_only:
            agg["f1"] = round(sum(r["f1"] for r in rs) / len(rs), 4)
            agg["em"] = round(sum(r["em"] for r in rs) / len(rs), 4)
            scored = [r["rouge_l"] for r in rs if r.get("rouge_l") is not None]  # older rows lack it
            if scored:
                agg["rouge_l"] = round(sum(scored) / len(scored), 4)
            matched = [r["match"] for r in rs if r.get("match") is not None]  # older rows lack it
            if matched:
                agg["match"] = round(sum(matched) / len(matched), 4)
        agg["seconds_per_question"] = round(sum(r["seconds"] for r in rs) / len(rs), 2)
        out[m] = agg
    return out


def markdown_table(summary: dict, k: int, retrieval_only: bool) -> str:
    scores = [] if retrieval_only else ["f1", "em", "rouge_l", "match"]
    quotes = ["spans_in_document", "gold_quoted"] if any("gold_quoted" in a for a in summary.values()) else []
    added = ["gold_memory_only"] if any("gold_memory_only" in a for a in summary.values()) else []
    cols = [f"recall@{k}", f"all_gold@{k}", *scores, *quotes, *added, "n", "seconds_per_question"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m, agg in summary.items():
        cells = [f"{agg[c]:.3f}" if isinstance(agg.get(c), float) else str(agg.get(c, "-")) for c in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(dataset: str, methods: list[str], *, first_index: int = 0, limit: int = 20, haystack_tokens: int = 32000,
        questions_per_haystack: int = 5, seed: int = 0, top_k: int = 5, retrieval_only: bool = False,
        output: Path = Path("results.json"), state_dir: Path | None = None, mem_model: str = "default",
        gen_model: str | None = None, chunk_tokens: int = 512, compression: str = "extractive",
        memory_window: int | None = None, progress: bool = True, query_plan: str | None = None,
        judge: str | None = None, quote_recall: bool = True, quote_from: str = "document", max_haystacks: int | None = None,
        plan_params: Mapping[str, object] | None = None,
        ret_model: str = "default", clues_from: Path | None = None, clues_method: str = "memorag+answer",
        evidence: str = DEFAULT_EVIDENCE, read_memory: bool | None = None, evidence_order: str = "document") -> dict:
    """Run ``methods`` on ``dataset``, write ``output`` and return its content.

    ``plan_params``: :class:`~memorag.plans.PlanParams` fields set for every plan the methods
    run (``--param``); each must be read by at least one of those plans. ``clues_from``: a
    results file whose ``clues_method`` rows' clue lines are every method's clues (as recalled
    spans; the memory writes none), so plans are compared on the clues of a stored run.
    ``evidence``: what the generator reads of each evidence chunk (``chunks``, ``excerpts``, ``passages`` or ``lead``,
    as ``MemoRAG(evidence=...)``); ``evidence_order``: the order the generator reads it in
    (``document`` or ``rank``, as ``MemoRAG(evidence_order=...)``). The options above are
    recorded in the results' config (and so in the resume key) only when given; of these two,
    ``evidence`` whenever answers are generated from other than whole chunks (the reading of
    runs made before the option) and ``evidence_order`` whenever answers are generated, since
    answers made before that option read the evidence in rank order.

    ``read_memory``: None (default) reads a haystack into the memory model only when some
    method asks the memory for clues (:func:`memorag.eval.methods.methods_read_memory`) and
    they are not replayed; True reads every haystack as runs did before (the rows are the
    same either way). The config's ``memory_read`` says which was done; it is not part of
    the resume key."""
    if dataset not in datasets.DATASETS:  # before any model loads
        raise datasets.DatasetError(f"Unknown dataset {dataset!r}: choose one of {', '.join(datasets.DATASETS)}.")
    if query_plan is not None:
        from memorag.models.registry import resolve_plan

        resolve_plan(query_plan)  # an unknown plan is one clear error, before any model loads
    overrides = check_plan_params(method_plans(methods, query_plan or DEFAULT_PLAN), plan_params) \
        if plan_params else {}
    stored = stored_clues(Path(clues_from), clues_method) if clues_from is not None else None
    if stored is not None and any("memory_bridge" in plan_options(p)
                                  for p in method_plans(methods, query_plan or DEFAULT_PLAN)):
        # The second hop asks the memory after the judge, a question no stored clue answers:
        # a replay runs without it, and says so in its config (plan_params).
        if overrides.get("memory_bridge"):
            raise datasets.DatasetError("--clues-from replays stored clues, and memory_bridge asks the memory "
                                        "again after the judge, which a replay cannot: drop one of them.")
        overrides = {**overrides, "memory_bridge": False}
    if evidence_key(evidence) != evidence_key(DEFAULT_EVIDENCE) and retrieval_only:
        raise datasets.DatasetError("--evidence sets what the generator reads; --retrieval-only generates "
                                    "nothing. Drop one of them.")
    if not retrieval_only:
        try:
            import rouge_score  # noqa: F401  (ROUGE-L of every answer)
        except ImportError:
            raise MemoRAGError("Scoring answers (F1, EM, ROUGE-L) needs rouge-score: "
                               "`pip install 'memorag[eval]'`, or pass --retrieval-only.") from None
    if retrieval_only:
        methods = [m for m in methods if m != "full"]
    # By default the memory gets the window `ask` gives it (the default memory's
    # DEFAULT_MEMORY_WINDOW, so a longer haystack is read as an extract), and any other memory
    # model a window that fits the whole haystack; --memory-window sets it (how windows and
    # compression methods are compared on the same data).
    n_ctx = memory_window or default_window(mem_model) or min(32768, haystack_tokens + haystack_tokens // 4 + 2048)
    pipe = MemoRAG(mem_model_name_or_path=mem_model, ret_model_name_or_path=ret_model,
                   gen_model_name_or_path=gen_model, ret_hit=top_k,
                   retrieval_chunk_size=chunk_tokens, n_ctx=n_ctx, compression=compression,
                   judge="auto" if judge is None else None if judge == "none" else judge, quote_recall=quote_recall, quote_from=quote_from,
                   evidence=evidence,
                   evidence_order=evidence_order, **({"query_plan": query_plan} if query_plan else {}))
    count = pipe.memory.llm.count_tokens
    haystacks = datasets.build(dataset, first_index=first_index, limit=limit, per_haystack=questions_per_haystack,
                               haystack_tokens=haystack_tokens, seed=seed, count_tokens=count)
    if max_haystacks is not None:
        # Only the first haystacks (a long run cut short): the haystacks themselves, and so
        # the resume key, stay those of the whole run, so its finished rows are reused.
        haystacks = haystacks[:max_haystacks]
    config = {"dataset": dataset, "methods": methods, "first_index": first_index, "limit": limit,
              "haystack_tokens": haystack_tokens, "questions_per_haystack": questions_per_haystack, "seed": seed,
              "top_k": top_k, "retrieval_only": retrieval_only, "chunk_tokens": chunk_tokens,
              "memory_model": pipe.memory.llm.describe(), "embedder": pipe.embedder.describe(),
              "generator": pipe.generator.describe() if hasattr(pipe.generator, "describe") else repr(pipe.generator),
              "query_plan": pipe.query_plan,
              "memory_window": pipe.memory.llm.context_window, "compression": compression}
    config["quote_recall"] = quote_recall
    if quote_from != "document":  # only when away from the default, so runs made before the option keep resuming
        config["quote_from"] = quote_from
    if judge is not None:  # only when given, so runs made before the option keep resuming
        config["judge"] = judge
    if overrides:  # likewise
        config["plan_params"] = overrides
    # likewise (runs made before the option read whole chunks); retrieval alone reads no evidence
    if evidence != Evidence.CHUNKS.value and not retrieval_only:
        config["evidence"] = evidence_key(evidence)  # with its width: never resumed with another
    if not retrieval_only:  # the order changes answers, not retrieval
        config["evidence_order"] = evidence_order
    if stored is not None:  # likewise; the clues themselves, not the file's name, make the key
        missing = [q.id for h in haystacks for q in h.questions if q.id not in stored]
        if missing:
            raise datasets.DatasetError(f"{clues_from} has no {clues_method} clues for {len(missing)} of these "
                                        f"questions (e.g. {missing[0]}): run with its dataset, --first-index, "
                                        "--limit and --seed.")
        config["clues_from"] = {"file": Path(clues_from).name, "method": clues_method,
                                "sha256": hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()}
    memory_read = read_memory if read_memory is not None else \
        stored is None and methods_read_memory(methods, pipe.query_plan)
    config["memory_read"] = memory_read
    root = state_dir or cache_dir() / "eval"
    output = Path(output)
    partial = output.with_suffix(".partial.jsonl")
    done: dict[tuple[str, str], dict] = {}
    if partial.exists():  # resume: every finished (question, method) is kept
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if row.get("config_key") == _config_key(config):
                done[(row["id"], row["method"])] = row
    kept = {q.id for h in haystacks for q in h.questions}
    done = {key: row for key, row in done.items() if key[0] in kept}
    total = sum(len(h.questions) for h in haystacks) * len(methods)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=len(done), desc=f"eval {dataset}", unit="answer", dynamic_ncols=True)
    rows = list(done.values())
    memorize_seconds: list[float] = []
    index_seconds: list[float] = []  # haystacks indexed without the memory pass

    def note(line: str) -> None:
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)

    if not memory_read:
        why = f"clues replayed from {Path(clues_from).name}" if stored is not None else \
            "no method asks the memory for clues"
        note(f"memory pass skipped ({why}): each haystack is only chunked and indexed")
    with open(partial, "a", encoding="utf-8") as log:
        for hay in haystacks:
            for q in hay.questions:  # rows written before the clue measures were kept: bring them up to date
                for m in methods:
                    row = done.get((q.id, m))
                    if row is None:
                        continue
                    update_clue_measures(row, hay, q, pipe.query_plan)
            todo = [(q, m) for q in hay.questions for m in methods if (q.id, m) not in done]
            if not todo:
                continue
            if memory_read:
                seconds = load_or_memorize(pipe, root, hay, progress)
                if seconds is not None:
                    memorize_seconds.append(seconds)
            else:
                # No memory state at all (not a previous haystack's): a method that asked the
                # memory anyway would fail loudly, not read another document.
                pipe.memory.state = None
                pipe.retriever.state, where, seconds = index_haystack(pipe, root, hay, progress)
                if where == "built":
                    index_seconds.append(seconds)
                source = "built" if where == "built" else f"read from its {where}"
                note(f"haystack {hay.id}: memory pass skipped; chunks and index {source}")
            runner = MethodRunner(pipe, top_k, plan_params=overrides)
            for q, m in todo:
                if stored is not None:
                    runner.memory.remember(Clues(q.question, spans=list(stored[q.id])))
                t = time.perf_counter()
                res = runner.retrieve(m, q.question, hay.text)
                pred = "" if retrieval_only else runner.answer(m, q.question, hay.text, res)
                row = {"id": q.id, "method": m, "question": q.question, "answers": q.answers,
                       "recall": recall_at_k(q.gold, res.evidence) if m != "full" else None,
                       "all_gold": all_gold_at_k(q.gold, res.evidence) if m != "full" else None,
                       "prediction": pred, "f1": qa_f1(pred, q.answers) if pred else 0.0,
                       "em": exact_match(pred, q.answers) if pred else 0.0,
                       "rouge_l": rouge_l(pred, q.answers) if pred else 0.0,
                       "match": match_score(pred, q.answers, q.match), "clues": res.clues,
                       "query": res.query, "seconds": round(time.perf_counter() - t, 2),
                       # which chunks, best first: two methods with the same ids gave the generator
                       # the same evidence (bench/answer_diff.py answers only where they differ)
                       "evidence_ids": [h.chunk_id for h in res.found.hits] if res.found is not None else None,
                       "config_key": _config_key(config)}
                if res.found is not None and any(h.found_by for h in res.found.hits):
                    # how each evidence chunk was found, and the gold only the memory's chunks hold
                    row["evidence_found_by"] = [list(h.found_by) for h in res.found.hits]
                    row["gold_memory_only"] = gold_only_from(q.gold, res.evidence,
                                                             [h.found_by for h in res.found.hits])
                if res.found is not None and res.found.plan.bridge:  # the memory asked again (memory_bridge)
                    row["bridge"] = res.found.plan.bridge
                    row["bridge_chunk"] = res.found.plan.bridge_chunk
                spans = res.found.clues.spans if res.found is not None and res.found.clues else None
                if spans is not None and PLAN_METHODS.get(m, (None, False))[1]:  # only where the memory wrote clues
                    row["spans"] = spans
                    row.update(clue_quality(spans, hay, q))
                log.write(json.dumps(row, ensure_ascii=False) + "\n")
                log.flush()
                rows.append(row)
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    summary = summarize(rows, methods, top_k, retrieval_only)
    result = {"dataset": dataset, "config": config, "decoding": decoding_settings(), "methods": summary,
              "memorize_seconds": [round(s, 1) for s in memorize_seconds],
              **({} if memory_read else {"index_seconds": [round(s, 1) for s in index_seconds]}),
              **({"haystacks_evaluated": len(haystacks)} if max_haystacks is not None else {}),
              "questions": [{k: v for k, v in r.items() if k != "config_key"} for r in rows]}
    output.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


def stored_clues(path: Path, method: str) -> dict[str, list[str]]:
    """The clue lines of ``method``'s rows in the results file ``path``, by question id."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["questions"]
        clues = {r["id"]: list(r["clues"]) for r in rows if r["method"] == method}
    except FileNotFoundError:
        raise datasets.DatasetError(f"--clues-from: {path} does not exist.") from None
    except (ValueError, KeyError, TypeError):
        raise datasets.DatasetError(f"--clues-from: {path} is not a memorag eval results file.") from None
    if not clues:
        methods = sorted({r.get("method") for r in rows if isinstance(r, dict)} - {None})
        raise datasets.DatasetError(f"--clues-from: {path} has no rows of method {method!r} "
                                    f"(it has {', '.join(methods) or 'none'}).")
    return clues
def update_clue_measures(row: dict, hay: datasets.Haystack, question: datasets.EvalQuestion, query_plan: str) -> None:
    """Bring a stored row's clue measures up to date: none for a method whose memory wrote
    nothing; computed for rows written before rows kept them."""
    m = row["method"]
    if not PLAN_METHODS.get(m, (None, False))[1]:
        for key in ("spans", "spans_in_document", "gold_quoted"):  # no memory, no clue measures
            row.pop(key, None)
        return
    if "gold_quoted" in row:
        return
    if "spans" not in row and m == "memorag" and "questions" not in plan_clue_kinds(query_plan):
        # written before rows kept their spans: under a plan that reads no surrogate
        # questions (and no draft answer for this method), the clue lines are the spans
        row["spans"] = row["clues"]
    if "spans" in row:
        row.update(clue_quality(row["spans"], hay, question))


def clue_quality(spans: list[str], hay: datasets.Haystack, question: datasets.EvalQuestion) -> dict:
    """How well the memory's recalled spans quote: each span in the haystack word for
    word, and each gold sentence quoted by some span (memorag.eval.metrics)."""
    return {"spans_in_document": spans_in_document(spans, hay.text), "gold_quoted": gold_quoted(spans, question.gold)}


def _config_key(config: dict) -> str:
    # Neither the methods (rows are per method) nor whether the memory was read (the rows
    # are the same either way) set which stored rows a run may reuse.
    keep = {k: v for k, v in config.items() if k not in ("methods", "memory_read")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


__all__ = ["run", "parse_methods", "markdown_table", "summarize", "MemoRAGError"]
