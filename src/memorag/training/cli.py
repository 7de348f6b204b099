"""`memorag train`: build clue data, fine-tune the memory model with LoRA, export a GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(
    help="Train the memory model to quote the document: clue data, LoRA fine-tuning, GGUF export (docs/training.md).",
    no_args_is_help=True,
)

_Base = Annotated[str, typer.Option(help="Base memory model: 'default', a packaged name, a .gguf file or a transformers dir.")]


def _echo(line: str) -> None:
    typer.echo(line, err=True)


def _add_extracts(examples: list, split, extracts: int, memory_window: int, base: str, seed: int,
                  hotpotqa_range: tuple[int, int] | None = None) -> tuple[list, object]:
    """Paragraph-window examples plus ``extracts`` extract windows, and their merged split."""
    from memorag.models.registry import load_llm
    from memorag.training import data

    # The memory's own tokenizer, so every extract is the one the memory reads at run time.
    count = load_llm(base, n_ctx=512).count_tokens
    more, extract_split = data.build_extracts(extracts, seed=seed, memory_window=memory_window, count_tokens=count,
                                              hotpotqa_range=hotpotqa_range or data.DEFAULT_HOTPOTQA_RANGE)
    return examples + more, data.merge_splits(split, extract_split)


@train_app.command("data")
def data_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory for train.jsonl and split.json.")],
    hotpotqa: Annotated[int, typer.Option(help="HotpotQA examples (supporting-fact sentences).")] = 400,
    squad: Annotated[int, typer.Option(help="SQuAD examples (the answer's sentence).")] = 100,
    window_tokens: Annotated[int, typer.Option(help="Document window per example (estimated tokens).")] = 700,
    hotpotqa_first: Annotated[int, typer.Option(help="First HotpotQA index drawn; lower ones stay for evaluation.")] = 1000,
    hotpotqa_end: Annotated[int, typer.Option(help="End of the HotpotQA range (at most 3700: later ones are held out).")] = 3700,
    seed: Annotated[int, typer.Option(help="Seed for the choice and order of examples.")] = 0,
    windows: Annotated[int, typer.Option(help="Long-window mode: this many shared windows of several questions "
                                               "each (--hotpotqa/--squad are then ignored; 0: one window per example).")] = 0,
    questions_per_window: Annotated[int, typer.Option(help="Long-window mode: questions asked of each window.")] = 4,
    squad_share: Annotated[float, typer.Option(help="Long-window mode: share of windows drawn from SQuAD articles.")] = 0.25,
    extracts: Annotated[int, typer.Option(help="Long-window mode: also this many extract windows (a 32K-token "
                                               "haystack of 20 questions compressed to --memory-window, as the "
                                               "memory reads a long document).")] = 0,
    memory_window: Annotated[int, typer.Option(help="The memory window the extracts are made for (tokens).")] = 8192,
    base: Annotated[str, typer.Option(help="The memory model whose tokenizer sizes the extracts.")] = "default-base",
) -> None:
    """Build clue examples in the memory's recall prompt format (needs the evaluation data wheel)."""
    from memorag.errors import InputError
    from memorag.training import data

    if extracts and not windows:
        raise InputError("--extracts adds to long-window mode: give --windows too.")
    if windows:
        examples, split = data.build_windows(windows, questions_per_window, window_tokens=window_tokens,
                                             squad_share=squad_share, seed=seed,
                                             hotpotqa_range=(hotpotqa_first, hotpotqa_end))
        if extracts:
            examples, split = _add_extracts(examples, split, extracts, memory_window, base, seed,
                                            (hotpotqa_first, hotpotqa_end))
    else:
        examples, split = data.build(hotpotqa, squad, window_tokens=window_tokens, seed=seed,
                                     hotpotqa_range=(hotpotqa_first, hotpotqa_end))
    path = data.write(examples, split, out_dir)
    _echo(f"wrote {len(examples)} examples to {path} ({len(split.hotpotqa_indices)} HotpotQA, {len(split.squad_ids)} "
          f"SQuAD); skipped: {split.skipped or 'none'}")


@train_app.command("lora")
def lora_command(
    data_path: Annotated[Path, typer.Argument(help="train.jsonl (or the directory holding it).")],
    out_dir: Annotated[Path, typer.Argument(help="Directory for the adapter and train_log.json.")],
    base: _Base = "default",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 200,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate (linear warmup and decay).")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 1,
    grad_accum: Annotated[int, typer.Option(help="Forward passes per optimizer step.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Skip examples longer than this (prompt + reply tokens).")] = 1024,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    precision: Annotated[str, typer.Option(help="Base weights: auto (bf16 on a GPU that has it, else fp32), fp32 or bf16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for example order and adapter init.")] = 0,
    log_every: Annotated[int, typer.Option(help="Print progress every N steps.")] = 1,
    adapter_scope: Annotated[str, typer.Option(help="task: the adapter is trained only after the document, whose KV "
                                                     "the base computes (how the memory runs it); all: every token.")] = "task",
    checkpoint_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints (task scope; 0: none).")] = 10,
) -> None:
    """Fine-tune LoRA adapters on clue examples (CPU, or a GPU when accelerate sees one)."""
    from memorag.training import data
    from memorag.training.lora import TrainConfig, train

    config = TrainConfig(steps=steps, learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                         max_tokens=max_tokens, rank=rank, alpha=2 * rank, precision=precision, seed=seed,
                         log_every=log_every, adapter_scope=adapter_scope, checkpoint_every=checkpoint_every)
    config.check()
    train(data.read(data_path), base, out_dir, config, log=_echo)


@train_app.command("export-adapter")
def export_adapter_command(
    adapter_dir: Annotated[Path, typer.Argument(help="The adapter directory written by `memorag train lora`.")],
    outfile: Annotated[Path, typer.Argument(help="The adapter GGUF to write.")],
    base: _Base = "default-base",
    outtype: Annotated[str, typer.Option(help="F16, F32 or Q8_0.")] = "F16",
    converter: Annotated[Path | None, typer.Option(help="convert_hf_to_gguf.py or its llama.cpp directory.")] = None,
) -> None:
    """Write the LoRA adapter alone as a llama.cpp adapter GGUF; use it as --mem-model 'BASE+lora=FILE'."""
    from memorag.training.export import export_adapter

    export_adapter(base, adapter_dir, outfile, outtype=outtype, converter=converter, log=_echo)


@train_app.command("export")
def export_command(
    adapter_dir: Annotated[Path, typer.Argument(help="The adapter directory written by `memorag train lora`.")],
    outfile: Annotated[Path, typer.Argument(help="The GGUF file to write.")],
    base: _Base = "default",
    quant: Annotated[str, typer.Option(help="Q4_K_M (the default model's type), Q5_K_M, Q6_K, Q8_0 or F16.")] = "Q4_K_M",
    converter: Annotated[Path | None, typer.Option(help="convert_hf_to_gguf.py or its llama.cpp directory.")] = None,
    keep_intermediate: Annotated[bool, typer.Option(help="Keep the merged model and the f16 GGUF.")] = False,
) -> None:
    """Merge the adapter into the base model and write a quantized GGUF for Memory("file.gguf")."""
    from memorag.training.export import export

    export(base, adapter_dir, outfile, qtype=quant, converter=converter, keep_intermediate=keep_intermediate,
           log=_echo)


@train_app.command("fetch-converter")
def fetch_converter_command() -> None:
    """Download llama.cpp's GGUF converter (from the llama-cpp-python sdist on PyPI) into the cache."""
    from memorag.training.export import fetch_converter

    typer.echo(str(fetch_converter(log=_echo)))


@train_app.command("run")
def run_command(
    out_dir: Annotated[Path, typer.Argument(help="Working directory: data/, adapter/, checkpoint/, train_log.json, the adapter GGUF.")],
    base: _Base = "default-base",
    windows: Annotated[int, typer.Option(help="Shared document windows (several questions each).")] = 70,
    questions_per_window: Annotated[int, typer.Option(help="Questions asked of each window.")] = 4,
    window_tokens: Annotated[int, typer.Option(help="Document window (estimated tokens).")] = 3000,
    squad_share: Annotated[float, typer.Option(help="Share of windows drawn from SQuAD articles.")] = 0.25,
    steps: Annotated[int, typer.Option(help="Optimizer steps (one window each).")] = 36,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    max_tokens: Annotated[int, typer.Option(help="Skip examples longer than this (window + task + reply tokens).")] = 6000,
    extracts: Annotated[int, typer.Option(help="Also this many extract windows: a 32K-token haystack of 20 questions "
                                               "compressed to the memory window, as the memory reads a long "
                                               "document (0: none). Needs --max-tokens above the window.")] = 0,
    memory_window: Annotated[int, typer.Option(help="The memory window the extracts are made for (tokens).")] = 8192,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """The whole flow that made the shipped default adapter: long-window data, task-scoped LoRA
    (resumable: run the same command again after a kill), adapter GGUF export."""
    from memorag.errors import InputError
    from memorag.training import data, require_train_extra
    from memorag.training.export import export_adapter, find_converter
    from memorag.training.lora import TrainConfig, train

    require_train_extra()
    if extracts and max_tokens <= memory_window:
        raise InputError(f"--extracts makes windows of up to {memory_window} tokens: give --max-tokens above that "
                         f"(e.g. {memory_window + 1024}); got {max_tokens}.")
    find_converter()  # before an hour of training, not after
    config = TrainConfig(steps=steps, learning_rate=learning_rate, max_tokens=max_tokens, seed=seed,
                         adapter_scope="task", checkpoint_every=6 if not extracts else 2)
    examples, split = data.build_windows(windows, questions_per_window, window_tokens=window_tokens,
                                         squad_share=squad_share, seed=seed)
    if extracts:
        examples, split = _add_extracts(examples, split, extracts, memory_window, base, seed)
    data.write(examples, split, out_dir / "data")
    _echo(f"{len(examples)} examples in {out_dir / 'data'}")
    train(examples, base, out_dir, config, log=_echo)
    from memorag.models.registry import DEFAULT_MEMORY_ADAPTER

    gguf = export_adapter(base, out_dir / "adapter", out_dir / DEFAULT_MEMORY_ADAPTER, log=_echo)
    typer.echo(str(gguf))


@train_app.command("judge")
def judge_command(
    out_dir: Annotated[Path, typer.Argument(help="Working directory: data/, adapter/, checkpoint/, train_log.json, the adapter GGUF.")],
    base: _Base = "default-base",
    hotpotqa: Annotated[int, typer.Option(help="HotpotQA questions (gold paragraphs against their own distractors).")] = 600,
    squad: Annotated[int, typer.Option(help="SQuAD questions (the answer's paragraph against others of its article).")] = 200,
    negatives: Annotated[int, typer.Option(help="Distractor paragraphs per question.")] = 3,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 60,
    questions_per_step: Annotated[int, typer.Option(help="Questions per optimizer step.")] = 4,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    temperature: Annotated[float, typer.Option(help="Temperature of the listwise loss over the passages' scores.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    outfile: Annotated[str, typer.Option(help="Adapter GGUF file name inside OUT_DIR.")] = "judge-lora-f16.gguf",
) -> None:
    """Train the 0.5B to judge passages by query likelihood, as the judging plans score them:
    data, question-scoped LoRA (resumable: run the same command again after a kill), adapter
    GGUF export. With its defaults, the run that made the shipped judge adapter. Use the
    result as --judge 'qwen2.5-0.5b+lora=FILE' (docs/training.md)."""
    from memorag.training import require_train_extra
    from memorag.training.export import export_adapter, find_converter
    from memorag.training.judge import JudgeTrainConfig, build_judge, train_judge, write_judge

    require_train_extra()
    find_converter()  # before an hour of training, not after
    config = JudgeTrainConfig(steps=steps, questions_per_step=questions_per_step, learning_rate=learning_rate,
                              temperature=temperature, seed=seed)
    config.check()
    examples, split = build_judge(hotpotqa, squad, negatives=negatives, seed=seed)
    write_judge(examples, split, out_dir / "data")
    _echo(f"{len(examples)} questions in {out_dir / 'data'}; skipped: {split['skipped'] or 'none'}")
    train_judge(examples, base, out_dir, config, log=_echo)
    gguf = export_adapter(base, out_dir / "adapter", out_dir / outfile, log=_echo)
    typer.echo(str(gguf))
