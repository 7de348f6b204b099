"""Hugging Face transformers backend (optional extra ``hf``), CPU or GPU.

The memory is the model's own KV cache (a ``DynamicCache``): ``prefill`` runs the document
once, each task runs only its own tokens on top of the cache and then crops the cache
back to the prefix, and ``save_prefix`` writes the key/value tensors with safetensors
(never pickle or ``torch.load``).

Decoding is a plain loop (greedy, or sampled when ``temperature`` > 0) rather than ``model.generate``: it streams token by
token, reuses the cache exactly, and does not depend on ``generate``'s cache arguments,
which change between transformers releases.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memorag import quoting
from memorag.errors import BackendError, ContextTooLongError, ModelNotFoundError, StateError
from memorag.llm.base import ChatMessage, Marked, ProgressFn, render_marked
from memorag.quoting import QuoteConstraint, document_text, log_softmax, quotable_text

STATE_FILE = "kv_cache.safetensors"


def _crop_to(cache, n_tokens: int) -> None:
    """Cut ``cache`` back to its first ``n_tokens`` (transformers crops by a negative count)."""
    extra = cache.get_seq_length() - n_tokens
    if extra > 0:
        cache.crop(-extra)


class TransformersLLM:
    def __init__(self, name_or_path: str, *, spec: str | None = None, cache_dir: str | None = None,
                 access_token: str | None = None, load_in_4bit: bool = False,
                 dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False,
                 n_ctx: int | None = None, offline: bool | None = None, seed: int = 0) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError("The transformers backend needs `pip install 'memorag[hf]'`.") from None
        self._torch = torch
        local = Path(name_or_path).expanduser().is_dir()
        # offline=None: a local directory never looks at the hub; a hub id does unless the
        # user set HF_HUB_OFFLINE (read here, never set).
        if offline is None:
            offline = local or os.environ.get("HF_HUB_OFFLINE") == "1"
        kwargs: dict[str, Any] = {"cache_dir": cache_dir, "token": access_token, "trust_remote_code": trust_remote_code,
                                  "local_files_only": offline}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
            model_kwargs = dict(kwargs)
            if load_in_4bit:
                from transformers import BitsAndBytesConfig

                model_kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True)
            if dtype != "auto":
                model_kwargs["dtype"] = getattr(torch, dtype)
            self.model = AutoModelForCausalLM.from_pretrained(name_or_path, **model_kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"Could not load '{name_or_path}' with transformers: {exc}. Give a local model directory, or an "
                "id already in the Hugging Face cache (this machine cannot download from the hub)."
            ) from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._rng = torch.Generator().manual_seed(seed)
        if not load_in_4bit:
            self.model.to(self.device)
        self.model.eval()
        self.spec = spec or f"hf:{name_or_path}"
        self.name = str(name_or_path)
        cfg = self.model.config
        self._context_window = int(n_ctx or getattr(cfg, "max_position_embeddings", 4096))
        self._eos = {t for t in [self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)]
                     if t is not None for t in (t if isinstance(t, list) else [t])}
        self._prefix_ids: list[int] = []
        self._pieces: dict[int, bytes] = {}  # token id -> bytes, for quote-constrained decoding
        self._cache = None
        self._tail = ""
        import inspect

        self._cache_kwarg_is_cache = "cache" in inspect.signature(self.model.forward).parameters
        h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
        self._fingerprint = h.hexdigest()[:32]

    # ---------------------------------------------------------------- basics
    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def describe(self) -> dict:
        return {"backend": "transformers", "spec": self.spec, "model": self.name, "fingerprint": self._fingerprint,
                "n_ctx": self.context_window}

    def _render(self, messages: list[ChatMessage], *, open_user_turn: bool) -> tuple[Marked, str]:
        # Contents are marked so that _ids can keep them plain text (see render_marked).
        return render_marked(messages, self._render_text, open_user_turn=open_user_turn)

    def _render_text(self, msgs: list[dict]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in msgs) + "\n\nAnswer:"

    def _tokens(self, text: str, *, plain: bool) -> list[int]:
        # split_special_tokens: text spelling a special token ("<|im_start|>") stays text
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=plain)["input_ids"])

    def _ids(self, marked: Marked) -> list[int]:
        """Template markup with special tokens, message contents as plain text."""
        ids: list[int] = []
        for i, part in enumerate(marked.parts()):
            if part:
                ids += self._tokens(part, plain=i % 2 == 1)
        return ids

    # ------------------------------------------------------------ decoding
    def _forward(self, ids: list[int], cache):
        torch = self._torch
        # transformers 5 renamed `past_key_values` to `cache`; accept either release line.
        key = "cache" if self._cache_kwarg_is_cache else "past_key_values"
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, **{key: cache})
        new_cache = getattr(out, "cache", None) or out.past_key_values
        return out.logits[0, -1], new_cache

    def _crop_to_prefix(self) -> None:
        _crop_to(self._cache, len(self._prefix_ids))

    def _pick(self, logits, temperature: float) -> int:
        if temperature and temperature > 0:  # sample from softmax(logits / T), seeded per instance
            probs = self._torch.softmax(logits.float() / temperature, dim=-1)
            return int(self._torch.multinomial(probs.cpu(), 1, generator=self._rng))
        return int(logits.argmax())

    def _decode(self, ids: list[int], cache, max_new_tokens: int, stop: list[str] | None,
                temperature: float = 0.0, constraint: QuoteConstraint | None = None,
                null_ids: list[int] | None = None) -> Iterator[str]:
        """Decoding on top of ``cache`` (which already holds everything before ``ids``):
        greedy at temperature 0, sampled above, or chosen by a quote ``constraint``.
        ``null_ids``: the task for no question in place of ``ids``, which the look-ahead's
        contrast reads (``quoting.QUOTE_CONTRAST``)."""
        before = cache.get_seq_length() if cache is not None else 0
        if len(ids) + before + 1 > self.context_window:
            raise ContextTooLongError(f"Prompt does not fit the model's {self.context_window}-token window.")
        logits, cache = self._forward(ids, cache)
        out: list[int] = []
        sent = ""
        contrast = None
        if constraint is not None and null_ids is not None and quoting.QUOTE_CONTRAST > 0:
            shared = quoting.question_start(ids, null_ids)

            def contrast(runs: list[list[int]], cache=cache) -> list[float]:
                """Each run's log-probability after the null task and the reply so far; the
                cache is cut back to what the two tasks share and the question's task and
                reply are read in again afterwards."""
                reply = list(out)
                _crop_to(cache, before + shared)
                try:
                    after, _ = self._forward(null_ids[shared:] + reply, cache)
                    first = log_softmax(after.double().cpu().numpy())
                    base = cache.get_seq_length()
                    scores = []
                    for run in runs:
                        total = float(first[run[0]])
                        for i in range(1, len(run)):
                            after, _ = self._forward([run[i - 1]], cache)
                            total += float(log_softmax(after.double().cpu().numpy())[run[i]])
                        _crop_to(cache, base)
                        scores.append(total)
                    return scores
                finally:
                    _crop_to(cache, before + shared)
                    self._forward(ids[shared:] + reply, cache)
        while len(out) < max_new_tokens:
            # A quote the constraint completes from the document is read in one forward pass
            # (memorag.quoting, COMPLETE_UNIQUE); every other token is decoded.
            if constraint is None:
                tok = self._pick(logits, temperature)
                if tok in self._eos:
                    break
                new = [tok]
            else:
                def peek(tokens: list[int], cache=cache) -> np.ndarray:
                    """The logits after ``tokens``, read and then cropped out of the cache again."""
                    after, grown = self._forward(list(tokens), cache)
                    grown.crop(-len(tokens))
                    return after.float().cpu().numpy()

                new = constraint.next_tokens(lambda now=logits: now.float().cpu().numpy(),
                                             lambda text: self._tokens(text, plain=True), max_new_tokens - len(out),
                                             peek, contrast)
                if not new:
                    break
            out.extend(new)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if stop and any(s in text for s in stop):
                text = text[: min(text.index(s) for s in stop if s in text)]
                if len(text) > len(sent):
                    yield text[len(sent):]
                return
            # Hold back text that ends in an incomplete UTF-8 character.
            if not text.endswith("\ufffd") and len(text) > len(sent):
                yield text[len(sent):]
                sent = text
            logits, cache = self._forward(new, cache)

    def stream_chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
                    stop: list[str] | None = None) -> Iterator[str]:
        text, _ = self._render(messages, open_user_turn=False)
        yield from self._decode(self._ids(text), None, max_new_tokens, stop, temperature)

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        return "".join(self.stream_chat(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop))

    # -------------------------------------------------------- prefix state
    def prefill(self, messages: list[ChatMessage], *, progress: ProgressFn | None = None) -> int:
        head, tail = self._render(messages, open_user_turn=True)
        ids = self._ids(head)
        if len(ids) + 256 > self.context_window:
            raise ContextTooLongError(
                f"The document is {len(ids)} tokens with the memory prompt; the model's window is "
                f"{self.context_window} tokens."
            )
        cache = None
        step = 512
        for start in range(0, len(ids), step):
            _, cache = self._forward(ids[start : start + step], cache)
            if progress:
                progress(min(start + step, len(ids)), len(ids))
        self._prefix_ids, self._cache, self._tail = ids, cache, tail
        return len(ids)

    @property
    def prefix_tokens(self) -> int:
        return len(self._prefix_ids)

    def continue_chat(self, user_suffix: str, *, max_new_tokens: int = 256, temperature: float = 0.0,
                      stop: list[str] | None = None) -> Iterator[str]:
        if self._cache is None:
            raise StateError("No prefix state: memorize or load a document first.")
        try:
            # the task (with the user's question) is plain text; the tail is template markup
            suffix = self._tokens(user_suffix, plain=True) + self._tokens(self._tail, plain=False)
            yield from self._decode(suffix, self._cache, max_new_tokens, stop, temperature)
        finally:
            # The task's tokens were appended to the shared cache; cut back to the document.
            self._crop_to_prefix()

    def continue_quotes(self, user_suffix: str, *, max_new_tokens: int = 128, min_words: int = 4,
                        avoid: Sequence[str] = (), null_suffix: str | None = None,
                        source: str | None = None) -> Iterator[str]:
        """Like :meth:`continue_chat` (greedy), but every line of the reply is a verbatim
        piece of the memorized prefix outside ``avoid``, at least ``min_words`` long
        (memorag.quoting). ``null_suffix``: the task for no question, which the look-ahead's
        contrast reads (``quoting.QUOTE_CONTRAST``). ``source``: the text quotes come from
        instead of the memorized document."""
        if self._cache is None:
            raise StateError("No prefix state: memorize or load a document first.")
        if source is None:
            source = document_text(self.tokenizer.decode(self._prefix_ids, skip_special_tokens=True))
        source = quotable_text(source, avoid)
        newline = self._tokens("\n", plain=True)[-1]
        eos = min(self._eos) if self._eos else newline
        constraint = QuoteConstraint(source, self._token_bytes, is_end=lambda t: t in self._eos, end_id=eos,
                                     newline_id=newline, min_words=min_words,
                                     tokenize=lambda text: self._tokens(text, plain=True))
        try:
            suffix = self._tokens(user_suffix, plain=True) + self._tokens(self._tail, plain=False)
            # the null task is only read by the contrast (this backend reads the whole task every time)
            null = (None if null_suffix is None or quoting.QUOTE_CONTRAST <= 0 else
                    self._tokens(null_suffix, plain=True) + self._tokens(self._tail, plain=False))
            yield from self._decode(suffix, self._cache, max_new_tokens, None, 0.0, constraint, null)
        finally:
            self._crop_to_prefix()

    def _token_bytes(self, token: int) -> bytes:
        """A token's text as it reads after other text: decoded behind a newline, because
        some tokenizers drop a token's leading space when it is decoded alone. A token
        holding part of a multi-byte character decodes to U+FFFD and never matches."""
        piece = self._pieces.get(token)
        if piece is None:
            anchor = self._tokens("\n", plain=True)[-1:]
            base = self.tokenizer.decode(anchor)
            text = "" if token in self._eos else self.tokenizer.decode(anchor + [token], skip_special_tokens=True)
            piece = self._pieces[token] = text[len(base):].encode("utf-8")
        return piece

    def save_prefix(self, directory: Path) -> dict:
        from safetensors.torch import save_file

        if self._cache is None:
            raise StateError("No prefix state to save: memorize a document first.")
        self._crop_to_prefix()
        tensors = {}
        for i, layer in enumerate(self._cache.layers):
            tensors[f"k.{i}"] = layer.keys.detach().to("cpu").contiguous()
            tensors[f"v.{i}"] = layer.values.detach().to("cpu").contiguous()
        path = Path(directory) / STATE_FILE
        save_file(tensors, str(path), metadata={"prefix_ids": json.dumps(self._prefix_ids)})
        return {"file": STATE_FILE, "n_tokens": len(self._prefix_ids), "layers": len(self._cache.layers),
                "tail": self._tail}

    def load_prefix(self, directory: Path, info: dict) -> None:
        from safetensors import safe_open
        from transformers import DynamicCache

        path = Path(directory) / info.get("file", STATE_FILE)
        try:
            with safe_open(str(path), framework="pt") as f:
                ids = json.loads(f.metadata()["prefix_ids"])
                cache = DynamicCache()
                for i in range(int(info["layers"])):
                    cache.update(f.get_tensor(f"k.{i}").to(self.device), f.get_tensor(f"v.{i}").to(self.device), i)
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise StateError(f"Memory state {path} is missing or corrupt ({type(exc).__name__}). "
                             "Memorize the document again.") from None
        if len(ids) != int(info["n_tokens"]) or cache.get_seq_length() != len(ids):
            raise StateError(f"Memory state {path} does not match its description (corrupt save dir?).")
        self._prefix_ids, self._cache, self._tail = ids, cache, info.get("tail", "")

    def snapshot_prefix(self) -> tuple | None:
        # prefill builds a new cache object and continue_chat crops back to the prefix, so
        # holding the current objects is a snapshot (no copy of the tensors).
        if self._cache is None:
            return None
        self._crop_to_prefix()
        return (list(self._prefix_ids), self._cache, self._tail)

    def restore_prefix(self, snapshot: tuple | None) -> None:
        if snapshot is None:
            self._prefix_ids, self._cache, self._tail = [], None, ""
        else:
            ids, cache, tail = snapshot
            self._prefix_ids, self._cache, self._tail = list(ids), cache, tail

    def twin(self, n_ctx: int = 8192) -> TransformersLLM:
        """A generator sharing the weights but not the memory's cache."""
        other = object.__new__(TransformersLLM)
        other.__dict__.update(self.__dict__)
        other._prefix_ids, other._cache, other._tail = [], None, ""
        return other
