"""LoRA fine-tuning of a memory model on clue examples (transformers + peft + accelerate).

The base model is any spec that names a GGUF file (``default``, a packaged name, a path):
transformers dequantizes its weights (``from_pretrained(dir, gguf_file=...)``, needs the
``gguf`` package), or a local transformers directory. Each example is rendered with the
model's own chat template exactly as the memory sends it, and the loss counts only the
reply (the clue lines and the end-of-turn mark): the logits are computed for those
positions alone, which on a 150k-word vocabulary saves most of a CPU step.

Devices come from accelerate: the same call trains on a GPU when one is visible (bf16
base weights there when supported), and on the CPU (fp32) otherwise. Progress is one line per ``log_every``
steps: step, loss, seconds per step, CPU seconds.
"""

from __future__ import annotations

import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memorag.errors import InputError
from memorag.training import require_train_extra
from memorag.training.data import ClueExample

ADAPTER_DIR = "adapter"
TRAIN_LOG = "train_log.json"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps
    learning_rate: float = 2e-4
    batch_size: int = 1
    grad_accum: int = 4  # examples per optimizer step = batch_size * grad_accum
    max_tokens: int = 1024  # longer examples (prompt + reply) are skipped, never cut
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = TARGET_MODULES
    warmup_steps: int = 10
    seed: int = 0
    precision: str = "auto"  # the frozen base weights: auto (bf16 on a GPU that has it, else fp32), fp32, bf16
    log_every: int = 1
    # "task": the document's KV is computed by the base model (adapter off, no gradient) and
    # the adapter is trained only on the task and reply after it, as the memory applies it at
    # run time (LlamaCppLLM ``adapter_scope``); a memory saved by the base stays valid.
    # "all": the adapter sees every token (the document too), as a merged model would.
    adapter_scope: str = "all"
    checkpoint_every: int = 10  # steps between resumable checkpoints (0: none)

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.rank < 1:
            raise InputError("steps, batch_size, grad_accum and rank must be at least 1.")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be positive; got {self.learning_rate}.")
        if self.max_tokens < 32:
            raise InputError(f"max_tokens must be at least 32; got {self.max_tokens}.")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be auto, fp32 or bf16; got {self.precision!r}.")
        if self.adapter_scope not in ("all", "task"):
            raise InputError(f"adapter_scope must be 'all' or 'task'; got {self.adapter_scope!r}.")
        if self.checkpoint_every < 0:
            raise InputError(f"checkpoint_every must be >= 0; got {self.checkpoint_every}.")


@dataclass
class Encoded:
    input_ids: list[int]
    n_target: int  # the last n_target ids are the reply (learned); the rest is the prompt


@dataclass
class SplitEncoded:
    """An example cut where the memory's run-time prefix ends: ``prefix_ids`` (system message
    and the open user turn with the document, as ``LlamaCppLLM.prefill`` evaluates them) and
    ``input_ids`` (the task, the turn's close and the reply, of which the last ``n_target``
    are learned)."""

    prefix_ids: list[int]
    input_ids: list[int]
    n_target: int


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    examples_used: int = 0
    examples_skipped: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.wall_seconds / self.steps if self.steps else 0.0


def base_source(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(directory, kwargs for from_pretrained, description)`` for a base model spec.

    A spec naming a GGUF file (``default``, a packaged model, ``*.gguf``) is loaded through
    transformers' GGUF support; a directory with ``config.json`` as it is.
    """
    from memorag.models.registry import resolve_gguf

    gguf = resolve_gguf(spec)
    if gguf is not None:
        from memorag.llm.llamacpp import file_fingerprint

        return str(gguf.parent), {"gguf_file": gguf.name}, {"spec": spec, "gguf": str(gguf),
                                                            "fingerprint": file_fingerprint(gguf)}
    path = Path(spec.removeprefix("hf:")).expanduser()
    if (path / "config.json").is_file():
        return str(path), {}, {"spec": spec, "dir": str(path)}
    raise InputError(f"Cannot train from {spec!r}: give 'default', a packaged model, a .gguf file, or a local "
                     "transformers directory (with config.json).")


def load_base(spec: str, dtype: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model (weights dequantized to ``dtype``, default float32) and description."""
    require_train_extra()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, kwargs, about = base_source(spec)
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype or torch.float32, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, about


def end_of_turn(tokenizer: Any, messages: list[dict]) -> str:
    """What the chat template writes after a reply's content (Qwen: ``<|im_end|>``): the
    model must learn to stop there, as llama.cpp stops generating at that token."""
    marker = "\u2063REPLY\u2063"
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": marker}], tokenize=False)
    if full.startswith(prompt) and marker in full:
        return full[full.index(marker) + len(marker):].rstrip()
    return tokenizer.eos_token or ""


def encode(tokenizer: Any, example: ClueExample, eot: str | None = None) -> Encoded:
    """Prompt ids (the chat template with the reply opened) followed by the reply's ids."""
    messages = example.messages()
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if eot is None:
        eot = end_of_turn(tokenizer, messages)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(example.target() + eot, add_special_tokens=False)["input_ids"]
    return Encoded(list(prompt_ids) + list(reply_ids), len(reply_ids))


def encode_split(tokenizer: Any, example: ClueExample, eot: str | None = None) -> SplitEncoded:
    """As :func:`encode`, cut between the document and the task (see :class:`SplitEncoded`)."""
    messages = example.messages()
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    task = messages[-1]["content"][len(messages[-1]["content"]) - len(_task_text(example)):]
    cut = prompt.rfind(task)
    if cut < 0:
        raise InputError(f"Example {example.id}: the task text is not in the rendered prompt.")
    if eot is None:
        eot = end_of_turn(tokenizer, messages)
    prefix_ids = tokenizer(prompt[:cut], add_special_tokens=False)["input_ids"]
    suffix_ids = tokenizer(prompt[cut:], add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(example.target() + eot, add_special_tokens=False)["input_ids"]
    return SplitEncoded(list(prefix_ids), list(suffix_ids) + list(reply_ids), len(reply_ids))


def _task_text(example: ClueExample) -> str:
    from memorag.prompts import prompts_for

    return prompts_for(example.language).recall.format(question=example.question)


def _precision(choice: str, on_gpu: bool) -> str:
    if choice != "auto":
        return choice
    if on_gpu:
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # On the CPU fp32: on this project's AMX Xeon a bare bf16 matmul ran ~8x faster than fp32,
    # but a whole bf16 training step of the 0.5B model took 76 CPU s against 38 for fp32 (one
    # first step each, under load; docs/training.md), so bf16 is opt-in until measured better.
    return "fp32"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def train(examples: list[ClueExample], base: str, output_dir: str | Path, config: TrainConfig | None = None, *,
          log: Callable[[str], None] | None = None, model_and_tokenizer: tuple[Any, Any] | None = None) -> TrainResult:
    """Fine-tune LoRA adapters on ``examples``; writes ``output_dir/adapter`` and ``train_log.json``.

    ``model_and_tokenizer`` skips loading ``base`` (tests pass a tiny model; ``base`` is then
    only recorded).
    """
    config = config or TrainConfig()
    config.check()
    require_train_extra()
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a directory for the training output.")
    out.mkdir(parents=True, exist_ok=True)
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    torch.manual_seed(config.seed)
    about: dict[str, Any] = {"spec": base}
    on_gpu = torch.cuda.is_available()
    precision = _precision(config.precision, on_gpu)
    # With bf16 the frozen base weights are held in bf16 (no autocast: casting every op costs
    # more than it saves); the LoRA weights stay fp32 (peft's default).
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if model_and_tokenizer is None:
        log(f"loading {base} (GGUF weights are dequantized into transformers, {precision})")
        tokenizer, model, about = load_base(base, dtype=dtype)
    else:
        model, tokenizer = model_and_tokenizer
        model = model.to(dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if config.adapter_scope == "task":
        return _train_task_scope(examples, model, tokenizer, about, out, config, log, precision,
                                 wall0=wall0, cpu0=cpu0, on_gpu=on_gpu)
    eot = end_of_turn(tokenizer, examples[0].messages()) if examples else ""
    encoded, skipped = [], 0
    for ex in examples:
        enc = encode(tokenizer, ex, eot)
        if len(enc.input_ids) > config.max_tokens:
            skipped += 1
            continue
        encoded.append(enc)
    if not encoded:
        raise InputError(f"No example fits max_tokens={config.max_tokens} ({skipped} longer): raise max_tokens or "
                         "build the data with a smaller window.")
    log(f"{len(encoded)} examples ({skipped} longer than {config.max_tokens} tokens skipped); "
        f"{config.steps} steps of {config.batch_size * config.grad_accum} examples")

    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, cpu=not on_gpu)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, config.steps // 5), config.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    pad = tokenizer.pad_token_id

    rng = random.Random(config.seed)
    order: list[int] = []

    def next_batch() -> list[Encoded]:
        nonlocal order
        batch = []
        for _ in range(config.batch_size):
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            batch.append(encoded[order.pop()])
        return batch

    def batch_loss(batch: list[Encoded]) -> Any:
        # Left padding keeps every reply at the right edge, so one logits_to_keep covers all
        # replies and the prompt positions never reach the vocabulary projection.
        width = max(len(b.input_ids) for b in batch)
        keep = max(b.n_target for b in batch) + 1
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), keep - 1), -100, dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b.input_ids)
            ids[i, width - n:] = torch.tensor(b.input_ids)
            mask[i, width - n:] = 1
            labels[i, keep - 1 - b.n_target:] = torch.tensor(b.input_ids[n - b.n_target:])
        ids, mask, labels = ids.to(accelerator.device), mask.to(accelerator.device), labels.to(accelerator.device)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
        logits = logits[:, :-1].float()  # position t predicts token t + 1
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                 ignore_index=-100)

    losses: list[float] = []
    step_log: list[dict] = []
    t_last, c_last = time.perf_counter(), _cpu_seconds()

    def one_step(step: int) -> None:
        nonlocal t_last, c_last
        total = 0.0
        for _ in range(config.grad_accum):
            with accelerator.accumulate(model):
                loss = batch_loss(next_batch())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total += float(loss.detach()) / config.grad_accum
        if not math.isfinite(total):
            raise InputError(f"The loss became {total} at step {step}: lower the learning rate.")
        losses.append(total)
        now, cpu = time.perf_counter(), _cpu_seconds()
        step_log.append({"step": step, "loss": round(total, 4), "seconds": round(now - t_last, 2),
                         "cpu_seconds": round(cpu - c_last, 2)})
        if step % config.log_every == 0 or step == config.steps:
            recent = step_log[-config.log_every:]
            sps = sum(r["seconds"] for r in recent) / len(recent)
            log(f"step {step}/{config.steps}  loss {total:.4f}  {sps:.1f} s/step  "
                f"cpu {sum(r['cpu_seconds'] for r in recent) / len(recent):.1f} s/step  "
                f"eta {sps * (config.steps - step) / 60:.1f} min")
        t_last, c_last = now, cpu

    stopped_at = _run_steps(one_step, 0, config.steps, step_log, log)  # Ctrl-C keeps what was trained
    adapter = _save_adapter(out, accelerator.unwrap_model(model), tokenizer, stopped_at is None)
    result = TrainResult(out, len(losses), losses, time.perf_counter() - wall0, _cpu_seconds() - cpu0,
                         len(encoded), skipped)
    record = {"base": about, "config": {**asdict(config), "target_modules": list(config.target_modules)},
              "precision": precision, "device": str(accelerator.device), "torch_threads": torch.get_num_threads(),
              "examples_used": len(encoded), "examples_skipped": skipped, "interrupted_at_step": stopped_at,
              "wall_seconds": round(result.wall_seconds, 1), "cpu_seconds": round(result.cpu_seconds, 1),
              "seconds_per_step": round(result.seconds_per_step, 2), "steps": step_log}
    (out / TRAIN_LOG).write_text(json.dumps(record, indent=1), encoding="utf-8")
    log(f"adapter written to {adapter} ({result.wall_seconds / 60:.1f} min, {result.cpu_seconds:.0f} CPU s)")
    return result


CHECKPOINT_DIR = "checkpoint"


def _save_checkpoint(out: Path, model: Any, optimizer: Any, scheduler: Any, step: int, step_log: list[dict],
                     fingerprint: dict) -> None:
    """Everything a resumed run needs, as safetensors and JSON (nothing pickled): the adapter
    weights, AdamW's moments, the schedule, the finished steps' log. Written aside and
    renamed into place, so a kill mid-write leaves the previous checkpoint."""
    import shutil

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = out / (CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(tmp / "adapter.safetensors"))
    state = optimizer.state_dict()
    tensors = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            tensors[f"{idx}.{key}"] = value.detach().reshape(-1).contiguous() if key == "step" else value.contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    (tmp / "state.json").write_text(json.dumps({"step": step, "step_log": step_log, "scheduler": sched,
                                                "param_groups": state["param_groups"], "run": fingerprint},
                                               indent=1), encoding="utf-8")
    final = out / CHECKPOINT_DIR
    old = out / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _run_steps(one_step: Callable[[int], None], start: int, steps: int, step_log: list[dict],
               log: Callable[[str], None], checkpoint: Callable[[int], None] | None = None,
               checkpoint_every: int = 0) -> int | None:
    """Run steps ``start + 1 .. steps``; ``one_step(step)`` trains one step and appends its row to
    ``step_log``. With ``checkpoint``, every ``checkpoint_every``-th step is checkpointed (never
    the last: the adapter itself is saved then). Ctrl-C stops between steps and keeps what was
    trained: the number of steps done is returned (None when all ran); with none done it re-raises."""
    try:
        for step in range(start + 1, steps + 1):
            one_step(step)
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                checkpoint(step)
    except KeyboardInterrupt:
        stopped_at = len(step_log)
        resume = " (run again to resume from the last checkpoint)" if checkpoint is not None else ""
        log(f"interrupted after {stopped_at} steps; saving that adapter{resume}")
        if not step_log:
            raise
        return stopped_at
    return None


def _save_adapter(out: Path, model: Any, tokenizer: Any, finished: bool) -> Path:
    """Write the adapter and tokenizer to ``out/adapter``; a finished run drops its checkpoint
    (nothing is left to resume, and a rerun trains afresh)."""
    import shutil

    adapter = out / ADAPTER_DIR
    model.save_pretrained(adapter, safe_serialization=True)
    tokenizer.save_pretrained(adapter)
    if finished:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return adapter


def _log_progress(log: Callable[[str], None], step_log: list[dict], step: int, steps: int, loss: float,
                  window: int, extra: str = "") -> None:
    """One progress line: step, loss, ``extra``, seconds per step over the last ``window``
    steps and the time left at that pace."""
    recent = step_log[-window:]
    sps = sum(r["seconds"] for r in recent) / len(recent)
    log(f"step {step}/{steps}  loss {loss:.4f}  {extra}{sps:.1f} s/step  eta {sps * (steps - step) / 60:.1f} min")


def _train_resumable(one_step: Callable[[int], None], out: Path, model: Any, tokenizer: Any, optimizer: Any,
                     scheduler: Any, start: int, steps: int, checkpoint_every: int, step_log: list[dict],
                     fingerprint: dict, log: Callable[[str], None]) -> tuple[int | None, Path]:
    """:func:`_run_steps` with a checkpoint every ``checkpoint_every`` steps, then the adapter
    saved (:func:`_save_adapter`): (steps done when interrupted or None, the adapter's dir)."""
    stopped_at = _run_steps(one_step, start, steps, step_log, log,
                            lambda step: _save_checkpoint(out, model, optimizer, scheduler, step, step_log, fingerprint),
                            checkpoint_every)
    return stopped_at, _save_adapter(out, model, tokenizer, stopped_at is None)


def _run_fingerprint(data_hash: str, about: dict, config: Any, **extra: object) -> dict:
    """What makes a checkpoint resumable by a run: its data, base and training config (not
    how often it logs or checkpoints)."""
    return {"data": data_hash, "base": about.get("fingerprint") or about.get("spec"), **extra,
            "config": {**asdict(config), "target_modules": list(config.target_modules), "log_every": None,
                       "checkpoint_every": None}}


def _lora_optimizer(model: Any, config: Any, out: Path, fingerprint: dict,
                    log: Callable[[str], None]) -> tuple[Any, list, Any, Any, int, list[dict]]:
    """``model`` wrapped in a LoRA adapter per ``config``, with its AdamW optimizer and linear
    warm-up schedule, restored from ``out``'s checkpoint of the same run when there is one:
    (model, trained params, optimizer, scheduler, steps done, their log)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, config.steps // 5), config.steps)
    start, step_log = _load_checkpoint(out, model, optimizer, scheduler, fingerprint, log)
    return model, params, optimizer, scheduler, start, step_log


def _fixed_order(n: int, length: int, seed: int) -> list[int]:
    """Shuffled passes over ``range(n)`` until ``length`` items. Fixed up front from the seed,
    so a resumed run trains what an uninterrupted one would, in the same order."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < length:
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm
    return order


def _load_checkpoint(out: Path, model: Any, optimizer: Any, scheduler: Any, fingerprint: dict,
                     log: Callable[[str], None]) -> tuple[int, list[dict]]:
    """Restore a checkpoint of the same run (same data, base and config); (0, []) if none."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    d = out / CHECKPOINT_DIR
    try:
        state = json.loads((d / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, []
    if state.get("run") != fingerprint:
        log(f"{d} belongs to another run (data, base or config differ): starting afresh")
        return 0, []
    set_peft_model_state_dict(model, load_file(str(d / "adapter.safetensors")))
    tensors = load_file(str(d / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        opt_state.setdefault(int(idx), {})[key] = value.reshape(()) if key == "step" else value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    sched = scheduler.state_dict()
    sched.update(state["scheduler"])
    scheduler.load_state_dict(sched)
    log(f"resumed from {d} at step {state['step']}")
    return int(state["step"]), list(state["step_log"])


def _train_task_scope(examples: list[ClueExample], model: Any, tokenizer: Any, about: dict, out: Path,
                      config: TrainConfig, log: Callable[[str], None], precision: str, *, wall0: float, cpu0: float,
                      on_gpu: bool) -> TrainResult:
    """LoRA trained only after the document: one optimizer step per document window.

    The window's KV is computed once per step by the base model without gradients (the
    adapter disabled), and every question over that window is trained on top of it: the
    task, the turn's close and the reply run with the adapter, and the loss counts the
    reply. That is exactly how the memory applies the adapter at run time, and it makes long
    windows affordable on a CPU: no activation of the document is kept for backward.
    Resumable: a checkpoint every ``config.checkpoint_every`` steps (``out/checkpoint``).
    """
    import hashlib

    import torch

    eot = end_of_turn(tokenizer, examples[0].messages())
    windows: dict[tuple[int, ...], list[SplitEncoded]] = {}
    skipped = 0
    for ex in examples:
        enc = encode_split(tokenizer, ex, eot)
        if len(enc.prefix_ids) + len(enc.input_ids) > config.max_tokens:
            skipped += 1
            continue
        windows.setdefault(tuple(enc.prefix_ids), []).append(enc)
    if not windows:
        raise InputError(f"No example fits max_tokens={config.max_tokens} ({skipped} longer): raise max_tokens.")
    groups = list(windows.values())
    used = sum(len(g) for g in groups)
    log(f"{used} examples in {len(groups)} windows ({skipped} longer than {config.max_tokens} tokens skipped); "
        f"{config.steps} steps of one window each")
    data_hash = hashlib.sha256(json.dumps([[e.id, e.question, e.document] for e in examples]).encode()).hexdigest()
    fingerprint = _run_fingerprint(data_hash, about, config)

    device = torch.device("cuda" if on_gpu else "cpu")
    model, params, optimizer, scheduler, start, step_log = _lora_optimizer(model.to(device), config, out,
                                                                           fingerprint, log)
    order = _fixed_order(len(groups), config.steps, config.seed)  # the window of every step
    model.train()

    def window_step(group: list[SplitEncoded], step: int) -> float:
        torch.manual_seed(config.seed * 100003 + step)  # dropout, reproducible across a resume
        prefix = torch.tensor([group[0].prefix_ids], device=device)
        with torch.no_grad(), model.disable_adapter():
            cache = model(input_ids=prefix, use_cache=True).past_key_values
        n_prefix = prefix.shape[1]
        total = 0.0
        for enc in group:
            ids = torch.tensor([enc.input_ids], device=device)
            keep = enc.n_target + 1
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=keep).logits
            logits = logits[:, :-1].float()
            labels = ids[:, -enc.n_target:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
            (loss / len(group)).backward()
            total += float(loss.detach()) / len(group)
            cache.crop(n_prefix - cache.get_seq_length())  # back to the document alone for the next question
            for layer in cache.layers:  # the kept slices must not lead back into this question's graph
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        return total

    t_last, c_last = time.perf_counter(), _cpu_seconds()

    def one_step(step: int) -> None:
        nonlocal t_last, c_last
        loss = window_step(groups[order[step - 1]], step)
        if not math.isfinite(loss):
            raise InputError(f"The loss became {loss} at step {step}: lower the learning rate.")
        now, cpu = time.perf_counter(), _cpu_seconds()
        step_log.append({"step": step, "loss": round(loss, 4), "questions": len(groups[order[step - 1]]),
                         "seconds": round(now - t_last, 2), "cpu_seconds": round(cpu - c_last, 2)})
        t_last, c_last = now, cpu
        if step % config.log_every == 0 or step == config.steps:
            _log_progress(log, step_log, step, config.steps, loss, config.log_every)

    stopped_at, adapter = _train_resumable(one_step, out, model, tokenizer, optimizer, scheduler, start, config.steps,
                                           config.checkpoint_every, step_log, fingerprint, log)
    losses = [r["loss"] for r in step_log]
    result = TrainResult(out, len(losses), losses, time.perf_counter() - wall0, _cpu_seconds() - cpu0, used, skipped)
    record = {"base": about, "config": {**asdict(config), "target_modules": list(config.target_modules)},
              "precision": precision, "device": str(device), "torch_threads": torch.get_num_threads(),
              "adapter_scope": "task", "windows": len(groups), "examples_used": used, "examples_skipped": skipped,
              "resumed_from_step": start or None, "interrupted_at_step": stopped_at,
              "wall_seconds_this_run": round(result.wall_seconds, 1), "cpu_seconds_this_run": round(result.cpu_seconds, 1),
              "steps": step_log}
    (out / TRAIN_LOG).write_text(json.dumps(record, indent=1), encoding="utf-8")
    log(f"adapter written to {adapter} ({result.wall_seconds / 60:.1f} min this run)")
    return result
