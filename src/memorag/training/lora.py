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

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.rank < 1:
            raise InputError("steps, batch_size, grad_accum and rank must be at least 1.")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be positive; got {self.learning_rate}.")
        if self.max_tokens < 32:
            raise InputError(f"max_tokens must be at least 32; got {self.max_tokens}.")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be auto, fp32 or bf16; got {self.precision!r}.")


@dataclass
class Encoded:
    input_ids: list[int]
    n_target: int  # the last n_target ids are the reply (learned); the rest is the prompt


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
        from memorag.llm.llamacpp import _file_fingerprint

        return str(gguf.parent), {"gguf_file": gguf.name}, {"spec": spec, "gguf": str(gguf),
                                                            "fingerprint": _file_fingerprint(gguf)}
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
    stopped_at = None
    try:
        for step in range(1, config.steps + 1):
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
    except KeyboardInterrupt:  # Ctrl-C: keep what was trained so far
        stopped_at = len(losses)
        log(f"interrupted after {stopped_at} steps; saving that adapter")
        if not losses:
            raise

    unwrapped = accelerator.unwrap_model(model)
    adapter = out / ADAPTER_DIR
    unwrapped.save_pretrained(adapter, safe_serialization=True)
    tokenizer.save_pretrained(adapter)
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
