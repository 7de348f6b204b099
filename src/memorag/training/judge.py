"""Training a small query-likelihood judge: a LoRA adapter that makes the 0.5B memory model
rank passages as the judging plans use it.

The judging plans (``likelihood``, ``recall``) score a candidate paragraph by the mean
log-probability of the question after the prompt ``LIKELIHOOD_USER`` holding the paragraph
(query likelihood). The untrained 0.5B is a weak judge beside the 1.5B
(docs/evaluation.md, "A smaller judge does not keep the gain"). Here the 0.5B is taught the
ranking itself: for each training question its gold paragraphs and a few hard distractors
(HotpotQA's own distractors, which were retrieved for the question; for SQuAD other
paragraphs of the same article) are scored exactly as at run time, and a listwise loss
pushes every gold paragraph's score above the distractors'.

The adapter acts only on the question: each paragraph's prompt, up to its last token, is
computed by the base model with the adapter off and without gradients, and the last prompt
token and the question run with the adapter (``LlamaCppLLM.continuation_logprobs`` applies it
the same way for an adapter loaded with the ``judge`` task). So a CPU step costs one
no-gradient pass over each paragraph plus a trained pass over a few dozen tokens, and the
judge's cached prompt heads stay the base model's.

Data come from HotpotQA indices in ``[1000, 3700)`` (the range the recall adapter drew from;
indices below 1000 are kept for evaluation) and SQuAD 2.0 dev. Resumable like the recall
adapter's run: a checkpoint every ``checkpoint_every`` steps, safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memorag.errors import InputError
from memorag.eval import datasets
from memorag.eval.datasets import TUNING_LIMIT
from memorag.llm.base import ChatMessage
from memorag.llm.llamacpp import JUDGE_TASK  # the adapter task LlamaCppLLM.continuation_logprobs applies
from memorag.training.data import DEFAULT_HOTPOTQA_RANGE

JUDGE_DATA_FORMAT = 1
JUDGE_DATA = "judge.jsonl"
JUDGE_SPLIT = "split.json"


def likelihood_prompt(language: str) -> str:
    from memorag.plans import LIKELIHOOD_USER

    return LIKELIHOOD_USER[language if language in LIKELIHOOD_USER else "en"]


@dataclass
class JudgeExample:
    id: str
    source: str  # "hotpotqa" or "squad"
    question: str
    passages: list[str]  # as the judge reads them: one paragraph, at most max_chars
    gold: list[int]  # indices into passages
    language: str = "en"

    def messages(self, i: int) -> list[ChatMessage]:
        """The judge's prompt for passage ``i``, as ``plans.likelihood_scores`` sends it."""
        return [{"role": "user", "content": likelihood_prompt(self.language).format(passage=self.passages[i])}]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> JudgeExample:
        return cls(**{k: row[k] for k in ("id", "source", "question", "passages", "gold", "language")})


def _window_with(text: str, needle: str, max_chars: int) -> str:
    """The judge's window of ``text`` (``plans.paragraphs``) that holds ``needle``, else the first."""
    from memorag.plans import paragraphs

    windows = paragraphs(text, max_chars) or [text[:max_chars]]
    return next((w for w in windows if needle and needle[:60] in w), windows[0])


def hotpotqa_judge_example(index: int, rng: random.Random, negatives: int, max_chars: int) -> JudgeExample | str:
    from memorag.training.data import _hotpotqa_parts

    parts = _hotpotqa_parts(index, as_clues=False)
    if isinstance(parts, str):
        return parts
    gold, others, sentences, question, _ = parts
    if len(others) < negatives:
        return "too few distractors"
    gold_windows = []
    for para in gold:
        needle = next((s for s in sentences if s in para), "")
        gold_windows.append(_window_with(para, needle, max_chars))
    negs = [_window_with(p, "", max_chars) for p in rng.sample(others, negatives)]
    passages = gold_windows + negs
    order = list(range(len(passages)))
    rng.shuffle(order)
    return JudgeExample(id=f"hotpotqa-{index}", source="hotpotqa", question=question,
                        passages=[passages[i] for i in order],
                        gold=sorted(order.index(i) for i in range(len(gold_windows))))


def squad_judge_example(article: int, paragraph: int, qa: dict, rng: random.Random, negatives: int,
                        max_chars: int) -> JudgeExample | str:
    art = datasets.squad_articles()[article]
    paras = [p["context"] for p in art["paragraphs"]]
    others = [i for i in range(len(paras)) if i != paragraph]
    if len(others) < negatives:
        return "too few paragraphs in the article"
    answer = qa["answers"][0]
    needle = datasets.sentence_with(paras[paragraph], answer["answer_start"]).strip()
    passages = [_window_with(paras[paragraph], needle, max_chars)]
    passages += [_window_with(paras[i], "", max_chars) for i in rng.sample(others, negatives)]
    order = list(range(len(passages)))
    rng.shuffle(order)
    return JudgeExample(id=f"squad-{qa['id']}", source="squad", question=qa["question"].strip(),
                        passages=[passages[i] for i in order], gold=[order.index(0)])


def build_judge(hotpotqa: int = 600, squad: int = 200, *, negatives: int = 3, max_chars: int = 700, seed: int = 0,
                hotpotqa_range: tuple[int, int] = DEFAULT_HOTPOTQA_RANGE) -> tuple[list[JudgeExample], dict]:
    """``hotpotqa`` + ``squad`` judge examples (seeded) and the split record."""
    lo, hi = hotpotqa_range
    if not 0 <= lo < hi <= TUNING_LIMIT:
        raise InputError(f"hotpotqa_range must lie within [0, {TUNING_LIMIT}); got {hotpotqa_range}.")
    if hotpotqa < 0 or squad < 0 or hotpotqa + squad == 0:
        raise InputError("Ask for at least one HotpotQA or SQuAD example.")
    if negatives < 1:
        raise InputError(f"negatives must be at least 1; got {negatives}.")
    rng = random.Random(seed)
    examples: list[JudgeExample] = []
    skipped: dict[str, int] = {}
    indices = list(range(lo, hi))
    rng.shuffle(indices)
    used_hotpotqa: list[int] = []
    for index in indices:
        if len(used_hotpotqa) >= hotpotqa:
            break
        ex = hotpotqa_judge_example(index, rng, negatives, max_chars)
        if isinstance(ex, str):
            skipped[ex] = skipped.get(ex, 0) + 1
            continue
        examples.append(ex)
        used_hotpotqa.append(index)
    from memorag.training.data import _squad_candidates

    used_squad: list[str] = []
    for article, paragraph, qa in _squad_candidates(rng):
        if len(used_squad) >= squad:
            break
        ex = squad_judge_example(article, paragraph, qa, rng, negatives, max_chars)
        if isinstance(ex, str):
            skipped[ex] = skipped.get(ex, 0) + 1
            continue
        examples.append(ex)
        used_squad.append(qa["id"])
    rng.shuffle(examples)
    split = {"format": JUDGE_DATA_FORMAT, "seed": seed, "negatives": negatives, "max_chars": max_chars,
             "hotpotqa_range": list(hotpotqa_range), "hotpotqa_indices": sorted(used_hotpotqa),
             "squad_ids": used_squad, "examples": len(examples), "skipped": skipped,
             "reserved_for_evaluation": f"HotpotQA indices outside [{lo}, {hi}); SQuAD ids not listed"}
    return examples, split


def write_judge(examples: list[JudgeExample], split: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JUDGE_DATA, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    (out / JUDGE_SPLIT).write_text(json.dumps(split, indent=1), encoding="utf-8")
    return out / JUDGE_DATA


def read_judge(path: str | Path) -> list[JudgeExample]:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / JUDGE_DATA
    if not p.is_file():
        raise InputError(f"No judge training data at {p} (make it with `memorag train judge-data`).")
    out = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(JudgeExample.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{p}:{n}: not a judge example ({exc}).") from None
    if not out:
        raise InputError(f"{p} holds no examples.")
    return out


@dataclass
class JudgeEncoded:
    """One passage's scoring sequence, cut where the adapter starts: ``prefix_ids`` (the
    prompt but its last token, the base model's) and ``input_ids`` (the last prompt token and
    the question, of which the last ``n_target`` are scored)."""

    prefix_ids: list[int]
    input_ids: list[int]
    n_target: int


def encode_judge(tokenizer: Any, example: JudgeExample, i: int) -> JudgeEncoded:
    prompt = tokenizer.apply_chat_template(example.messages(i), tokenize=False, add_generation_prompt=True)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    target = list(tokenizer(example.question, add_special_tokens=False)["input_ids"])
    return JudgeEncoded(prompt_ids[:-1], prompt_ids[-1:] + target, len(target))


@dataclass
class JudgeTrainConfig:
    steps: int = 60  # optimizer steps (the shipped adapter's run)
    questions_per_step: int = 4
    learning_rate: float = 3e-4
    temperature: float = 0.1  # the scores are mean log-probabilities per token: small gaps matter
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    warmup_steps: int = 10
    seed: int = 0
    checkpoint_every: int = 10
    log_every: int = 1

    def check(self) -> None:
        if self.steps < 1 or self.questions_per_step < 1 or self.rank < 1:
            raise InputError("steps, questions_per_step and rank must be at least 1.")
        if not self.learning_rate > 0 or not self.temperature > 0:
            raise InputError("learning_rate and temperature must be positive.")
        if self.checkpoint_every < 0:
            raise InputError(f"checkpoint_every must be >= 0; got {self.checkpoint_every}.")


def listwise_loss(scores: Any, gold: list[int], temperature: float) -> Any:
    """Mean over the gold passages of -log softmax(score / T) against the distractors alone:
    each gold passage must beat every distractor, and two gold passages (a two-hop
    question's) never compete with each other."""
    import torch

    neg = [i for i in range(scores.shape[0]) if i not in gold]
    losses = []
    for g in gold:
        pair = torch.cat([scores[g:g + 1], scores[neg]]) / temperature
        losses.append(-torch.log_softmax(pair, dim=0)[0])
    return torch.stack(losses).mean()


def passage_scores(model: Any, encs: list[JudgeEncoded], pad: int) -> Any:
    """Each passage's query-likelihood score (mean log-probability of the question), as a
    tensor with gradients through the adapter on the question only.

    All passages of a question run in one batch: the prompts left-padded (masked, positions
    counted from each prompt's first real token, so every row sees what llama.cpp sees) and
    computed by the base model without gradients, then the question, the same ids in every
    row, with the adapter."""
    import torch

    if any(e.input_ids != encs[0].input_ids for e in encs):
        raise InputError("The scored tail differs between passages (chat template?).")
    width = max(len(e.prefix_ids) for e in encs)
    ids = torch.full((len(encs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for row, e in enumerate(encs):
        ids[row, width - len(e.prefix_ids):] = torch.tensor(e.prefix_ids)
        mask[row, width - len(e.prefix_ids):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), model.disable_adapter():
        cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    n = len(encs[0].input_ids)
    tail = torch.tensor([encs[0].input_ids] * len(encs))
    tail_positions = mask.sum(-1, keepdim=True) + torch.arange(n)[None, :]
    full_mask = torch.cat([mask, torch.ones((len(encs), n), dtype=torch.long)], dim=1)
    logits = model(input_ids=tail, attention_mask=full_mask, position_ids=tail_positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=n).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(2, tail[:, 1:, None])[:, :, 0]
    return logp.mean(dim=1)


@dataclass
class JudgeTrainResult:
    output_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0


def train_judge(examples: list[JudgeExample], base: str, output_dir: str | Path, config: JudgeTrainConfig | None = None,
                *, log: Callable[[str], None] | None = None,
                model_and_tokenizer: tuple[Any, Any] | None = None) -> JudgeTrainResult:
    """Train the judge adapter; writes ``output_dir/adapter`` and ``train_log.json``."""
    config = config or JudgeTrainConfig()
    config.check()
    from memorag.training import require_train_extra

    require_train_extra()
    import torch

    from memorag.training.lora import (
        TRAIN_LOG,
        _fixed_order,
        _log_progress,
        _lora_optimizer,
        _run_fingerprint,
        _train_resumable,
        load_base,
    )

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    usable = [ex for ex in examples if ex.gold and len(ex.gold) < len(ex.passages)]
    if not usable:
        raise InputError("No judge example has both a gold passage and a distractor.")
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a directory for the training output.")
    out.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()
    torch.manual_seed(config.seed)
    if model_and_tokenizer is None:
        log(f"loading {base} (GGUF weights are dequantized into transformers, fp32)")
        tokenizer, model, about = load_base(base)
    else:
        model, tokenizer = model_and_tokenizer
        about = {"spec": base}
    encoded = [[encode_judge(tokenizer, ex, i) for i in range(len(ex.passages))] for ex in usable]
    data_hash = hashlib.sha256(json.dumps([ex.to_json() for ex in usable]).encode()).hexdigest()
    fingerprint = _run_fingerprint(data_hash, about, config, task=JUDGE_TASK)
    model, params, optimizer, scheduler, start, step_log = _lora_optimizer(model, config, out, fingerprint, log)
    order = _fixed_order(len(usable), config.steps * config.questions_per_step, config.seed)  # questions, step by step
    log(f"{len(usable)} questions, {sum(len(e.passages) for e in usable)} passages; {config.steps} steps of "
        f"{config.questions_per_step} questions")
    model.train()

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def question_loss(ex: JudgeExample, encs: list[JudgeEncoded]) -> tuple[Any, float]:
        stacked = passage_scores(model, encs, pad)
        # Pairwise accuracy of this question before the step: the training curve that means
        # something (the loss depends on the temperature).
        gold_scores = [float(stacked[g].detach()) for g in ex.gold]
        neg_scores = [float(stacked[i].detach()) for i in range(len(encs)) if i not in ex.gold]
        won = sum(g > n for g in gold_scores for n in neg_scores) / (len(gold_scores) * len(neg_scores))
        return listwise_loss(stacked, ex.gold, config.temperature), won

    t_last = time.perf_counter()

    def one_step(step: int) -> None:
        nonlocal t_last
        torch.manual_seed(config.seed * 100003 + step)  # dropout, reproducible across a resume
        picks = order[(step - 1) * config.questions_per_step: step * config.questions_per_step]
        total, wins = 0.0, 0.0
        for qi in picks:
            loss, won = question_loss(usable[qi], encoded[qi])
            (loss / len(picks)).backward()
            total += float(loss.detach()) / len(picks)
            wins += won / len(picks)
        if not math.isfinite(total):
            raise InputError(f"The loss became {total} at step {step}: lower the learning rate.")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        now = time.perf_counter()
        step_log.append({"step": step, "loss": round(total, 4), "pairs_won": round(wins, 4),
                         "seconds": round(now - t_last, 2)})
        t_last = now
        if step % config.log_every == 0 or step == config.steps:
            recent = step_log[-max(config.log_every, 10):]
            won = sum(r["pairs_won"] for r in recent) / len(recent)
            _log_progress(log, step_log, step, config.steps, total, len(recent),
                          f"pairs won (last {len(recent)}) {won:.3f}  ")

    stopped_at, adapter = _train_resumable(one_step, out, model, tokenizer, optimizer, scheduler, start, config.steps,
                                           config.checkpoint_every, step_log, fingerprint, log)
    result = JudgeTrainResult(out, len(step_log), [r["loss"] for r in step_log], time.perf_counter() - wall0)
    record = {"base": about, "task": JUDGE_TASK,
              "config": {**asdict(config), "target_modules": list(config.target_modules)},
              "torch_threads": torch.get_num_threads(), "questions": len(usable),
              "resumed_from_step": start or None, "interrupted_at_step": stopped_at,
              "wall_seconds_this_run": round(result.wall_seconds, 1), "steps": step_log}
    (out / TRAIN_LOG).write_text(json.dumps(record, indent=1), encoding="utf-8")
    log(f"adapter written to {adapter} ({result.wall_seconds / 60:.1f} min this run)")
    return result
