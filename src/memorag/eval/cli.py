"""`memorag eval`: one command from dataset to results table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memorag.config import DEFAULT_EVIDENCE, PASSAGE_CHARS


def eval_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="hotpotqa, squad, needle or vartrack (RULER variable tracking).")],
    methods: Annotated[str, typer.Option(help="Comma-separated, of: full, dense, bm25, hybrid, hyde, rerank, likelihood, clues, grounded, memorag, memorag+answer (docs/evaluation.md). Default: the question-only baselines, the judge without the memory (likelihood) and memorag (= ask).")] = "dense,bm25,hybrid,likelihood,memorag",
    first_index: Annotated[int, typer.Option(help="First question index (HotpotQA: keep tuning below 3700).")] = 0,
    limit: Annotated[int, typer.Option(help="Number of questions.")] = 20,
    haystack_tokens: Annotated[int, typer.Option(help="Token budget of each haystack.")] = 32000,
    questions_per_haystack: Annotated[int, typer.Option(help="Questions sharing one haystack (memorized once).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for filler choice and shuffling.")] = 0,
    top_k: Annotated[int, typer.Option(help="Evidence chunks per question (same for every method).")] = 5,
    retrieval_only: Annotated[bool, typer.Option(help="Skip answer generation; report retrieval metrics only.")] = False,
    output: Annotated[Path, typer.Option(help="Results JSON (a .partial.jsonl beside it makes runs resumable).")] = Path("results.json"),
    mem_model: Annotated[str, typer.Option(help="Memory model spec.")] = "default",
    gen_model: Annotated[str | None, typer.Option(help="Generator spec; default: qwen2.5-1.5b beside the default memory model, else the memory model.")] = None,
    judge: Annotated[str | None, typer.Option(help="Model that judges evidence for the judging plans (recall, likelihood, rerank, memorag); 'default' = judge-0.5b, the packaged trained judge. Default: that judge beside the packaged generator, else the generator's twin when it can judge (local llama.cpp), else none.")] = None,
    quote_recall: Annotated[bool, typer.Option(help="Decode the memory's recalled spans as verbatim quotes of the document (memorag.quoting); --no-quote-recall lets it write them freely.")] = True,
    quote_from: Annotated[str, typer.Option(help="Where the memory's quotes come from when it read an extract of a long haystack: document (the whole haystack) or memory (the extract).")] = "document",
    max_haystacks: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N haystacks of the run (a long run cut short; its finished rows are reused).")] = None,
    chunk_tokens: Annotated[int, typer.Option(help="Chunk size in embedder tokens.")] = 512,
    state_dir: Annotated[Path | None, typer.Option(help="Where memorized haystacks (and the chunks and index of haystacks no method reads into the memory) are cached.")] = None,
    compression: Annotated[str, typer.Option(help="Memory compression when a haystack exceeds the memory window: extractive, gist or none.")] = "extractive",
    plan: Annotated[str | None, typer.Option(help="Query plan of the memorag methods (default: the pipeline's, recall); e.g. recall+quotes.")] = None,
    memory_window: Annotated[int | None, typer.Option(help="Memory model context (tokens); a haystack longer than it is read as an extract. Default: the window ask gives the memory (8192 for the default memory), or the whole haystack for another memory model.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE: a query plan parameter (a field of memorag.plans.PlanParams, e.g. rerank_depth=20, likelihood_weight=1, follow_hops=2) for every plan the methods run; repeatable. A name no chosen plan reads is refused.")] = None,
    ret_model: Annotated[str, typer.Option(help="Embedding model spec (retrieval).")] = "default",
    clues_from: Annotated[Path | None, typer.Option(help="Replay the clues of a results file (its --clues-method rows) instead of asking the memory: plans compared on the same clues.")] = None,
    clues_method: Annotated[str, typer.Option(help="Whose clues --clues-from replays.")] = "memorag+answer",
    evidence: Annotated[str, typer.Option(help=f"What the generator reads of each evidence chunk: chunks (whole), excerpts (the sentences that bear on the question, with neighbours), passages (the paragraph the judge scored best) or lead (the best chunk whole, the judged paragraph of the others); passages:N and lead:N widen each judged paragraph to N characters (default {PASSAGE_CHARS}).")] = DEFAULT_EVIDENCE,
    evidence_order: Annotated[str, typer.Option(help="The order the generator reads the evidence in: document (as the text runs) or rank (best first).")] = "document",
    config: Annotated[Path | None, typer.Option("--config", help="A TOML or JSON file of settings (the configuration tree: docs/api.md): its models, memory, retrieval, plan and evidence sections; the flags given on the command line go over it, --param over its plan.params.", show_default=False)] = None,
) -> None:
    """Evaluate memorag against baselines on real data; prints a markdown table."""
    from memorag.cli import command_config
    from memorag.config import DEFAULT_PLAN
    from memorag.eval.runner import markdown_table, parse_methods, run
    from memorag.plans import parse_plan_params

    chosen = parse_methods(methods)
    tree = command_config(ctx, config, {
        "models.memory": ("mem_model", mem_model), "models.embedder": ("ret_model", ret_model),
        "models.generator": ("gen_model", gen_model), "models.judge": ("judge", judge or "auto"),
        "models.n_ctx": ("memory_window", memory_window), "memory.compression": ("compression", compression),
        "memory.quote_recall": ("quote_recall", quote_recall), "memory.quote_from": ("quote_from", quote_from), "retrieval.top_k": ("top_k", top_k),
        "retrieval.chunk_tokens": ("chunk_tokens", chunk_tokens), "plan.name": ("plan", plan or DEFAULT_PLAN),
        "evidence.render": ("evidence", evidence), "evidence.order": ("evidence_order", evidence_order)})
    options = tree.eval_kwargs()
    # --param is set for every plan the methods run (run() checks each is read by one of them),
    # so it goes over the tree's plan.params here rather than through the tree's one plan
    plan_params = {**options.pop("plan_params"), **parse_plan_params(param or [])}
    result = run(dataset, chosen, first_index=first_index, limit=limit, haystack_tokens=haystack_tokens,
                 questions_per_haystack=questions_per_haystack, seed=seed, retrieval_only=retrieval_only,
                 output=output, state_dir=state_dir, max_haystacks=max_haystacks, plan_params=plan_params,
                 clues_from=clues_from, clues_method=clues_method, **options)
    typer.echo(markdown_table(result["methods"], options["top_k"], retrieval_only))
    typer.echo(f"\nwrote {output}", err=True)
