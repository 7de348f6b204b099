"""OpenAI-compatible backend: OpenAI, Azure OpenAI, DeepSeek and self-hosted servers
(vLLM, Ollama, llama.cpp's server, llama-cpp-python's ``llama_cpp.server``).

``Agent`` keeps the original research code's constructor (``Agent(model, source,
api_dict, temperature)`` and ``generate(prompt)``) and implements memorag's LLM protocol,
so it can be the generator or the memory model.

As a memory model the "prefix state" is the prefix *text*: every recall/rewrite/answer
request sends the same system message and the same document-bearing user turn, with the
task appended at the end. Servers with prefix caching (vLLM automatic prefix caching,
llama.cpp ``cache_prompt``, DeepSeek context caching) then keep the document's KV cache
warm, so only the task is computed per request. Saving stores the prefix messages as
JSON; the server's own state is never saved.

Retries are the openai client's own (exponential backoff, honours ``Retry-After``, retries
429, 408/409, 5xx, timeouts and dropped connections); what is still failing afterwards,
and what must not be retried (400, 401, 403, 404), becomes one :class:`BackendError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memorag.errors import BackendError, ContextTooLongError, StateError
from memorag.llm.base import ChatMessage, ProgressFn, read_message_prefix, write_message_prefix

PREFIX_FILE = "prefix.json"
SOURCES = ("openai", "azure", "deepseek")
DEEPSEEK_URL = "https://api.deepseek.com"


def _explain(exc: Exception, where: str) -> BackendError:
    """One clear message for whatever the client raised."""
    import openai

    if isinstance(exc, openai.AuthenticationError):
        msg = f"{where} rejected the API key (401). Check api_key / the *_API_KEY environment variable."
    elif isinstance(exc, openai.PermissionDeniedError):
        msg = f"{where} refused the request (403): the key has no access to this model."
    elif isinstance(exc, openai.NotFoundError):
        msg = f"{where} does not know this model or path (404). Check the model name and base_url (usually ending in /v1)."
    elif isinstance(exc, openai.BadRequestError):
        msg = f"{where} rejected the request as invalid (400): {getattr(exc, 'message', exc)}"
    elif isinstance(exc, openai.RateLimitError):
        # The client waits out a Retry-After up to its limit (2 minutes in openai 3.x); a
        # longer one is not waited for, so say what the server asked.
        after = exc.response.headers.get("retry-after") if getattr(exc, "response", None) is not None else None
        msg = (f"{where} answered 429 (rate limited)"
               + (f" and asks to retry after {after} s" if after else "")
               + ", after the retries memorag makes. Wait, or lower the request rate.")
    elif isinstance(exc, openai.APITimeoutError):
        msg = f"{where} did not answer within the timeout, even after retries."
    elif isinstance(exc, openai.APIConnectionError):
        msg = f"Cannot reach {where}: connection failed or was closed, even after retries. Is the server running?"
    elif isinstance(exc, openai.APIStatusError):
        msg = f"{where} failed with HTTP {exc.status_code} after all retries."
    else:
        msg = f"{where} failed: {type(exc).__name__}: {exc}"
    return BackendError(msg)


def _delta_text(chunk: Any) -> str:
    choices = chunk.choices
    if not choices:
        return ""
    delta = choices[0].delta
    content = delta.content if delta is not None else None
    if content is not None and not isinstance(content, str):
        raise TypeError(f"delta content is {type(content).__name__}")
    return content or ""


class Agent:
    """A chat model behind an OpenAI-compatible API.

    ``api_dict`` by source:
      * ``openai``: ``api_key`` (or ``OPENAI_API_KEY``), optional ``base_url`` for any
        OpenAI-compatible server such as ``http://127.0.0.1:8000/v1``
      * ``azure``: ``endpoint``, ``api_version``, ``api_key``; ``model`` is the deployment
      * ``deepseek``: ``api_key`` (or ``DEEPSEEK_API_KEY``), optional ``base_url``
    """

    def __init__(self, model: str, source: str = "openai", api_dict: dict | None = None,
                 temperature: float = 0.0, *, timeout: float = 120.0, max_retries: int = 4,
                 context_window: int = 32768, spec: str | None = None) -> None:
        try:
            import openai
        except ImportError:
            raise BackendError("The OpenAI backend needs the openai client: `pip install 'memorag[openai]'`.") from None
        if source not in SOURCES:
            raise BackendError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
        api = dict(api_dict or {})
        self.model = model
        self.source = source
        self.temperature = temperature
        self._context_window = context_window
        common: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries}
        if source == "azure":
            missing = [k for k in ("endpoint", "api_version") if not api.get(k)]
            if missing:
                raise BackendError(f"Azure needs api_dict keys {', '.join(missing)} (and api_key).")
            self.base_url = api["endpoint"]
            self._client = openai.AzureOpenAI(azure_endpoint=api["endpoint"], api_version=api["api_version"],
                                              api_key=api.get("api_key") or os.environ.get("AZURE_OPENAI_API_KEY"),
                                              **common)
        else:
            env = "DEEPSEEK_API_KEY" if source == "deepseek" else "OPENAI_API_KEY"
            default_url = DEEPSEEK_URL if source == "deepseek" else None
            self.base_url = api.get("base_url") or default_url
            # Self-hosted servers usually take any key; the client insists on one.
            key = api.get("api_key") or os.environ.get(env) or ("EMPTY" if api.get("base_url") else None)
            if key is None:
                raise BackendError(f"No API key for {source}: pass api_dict={{'api_key': ...}} or set {env}.")
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, **common)
        self.spec = spec or (f"{source}:{model}@{self.base_url}" if self.base_url else f"{source}:{model}")
        self._prefix: list[ChatMessage] = []

    @property
    def _where(self) -> str:
        return f"the {self.source} server at {self.base_url}" if self.base_url else f"the {self.source} API"

    # ----------------------------------------------------------- generation
    def stream_chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256,
                    temperature: float | None = None, stop: list[str] | None = None) -> Iterator[str]:
        import openai

        got = 0  # characters already handed out: after the first, a retry would repeat them
        chunks = 0
        try:
            stream = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_new_tokens, stream=True,
                temperature=self.temperature if temperature is None else temperature, stop=stop or None,
            )
            try:
                for chunk in stream:
                    piece = _delta_text(chunk)
                    if piece:
                        chunks += 1
                        got += len(piece)
                        yield piece
                        # A server that ignores max_tokens (one piece is at least one token)
                        # would otherwise stream for as long as it likes.
                        if chunks >= max_new_tokens:
                            break
            finally:
                stream.close()
        except openai.OpenAIError as exc:
            if got:
                raise BackendError(f"{self._where} cut the answer stream after {got} characters "
                                   f"({type(exc).__name__}); the answer above is incomplete.") from None
            raise _explain(exc, self._where) from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # e.g. an SSE line that is not JSON
            raise BackendError(f"{self._where} sent a malformed stream ({type(exc).__name__}: {str(exc)[:120]})"
                               + ("; the answer above is incomplete." if got else ".")) from None

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float | None = None,
             stop: list[str] | None = None) -> str:
        import openai

        try:
            resp = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_new_tokens, stream=False,
                temperature=self.temperature if temperature is None else temperature, stop=stop or None,
            )
            content = resp.choices[0].message.content
        except openai.OpenAIError as exc:
            raise _explain(exc, self._where) from None
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            # A 200 whose body is not a chat completion (an HTML page from a proxy, "{}", ...)
            raise BackendError(f"{self._where} sent a malformed response ({type(exc).__name__}: "
                               f"{str(exc)[:120]}). Is base_url an OpenAI-compatible /v1 endpoint?") from None
        if content is not None and not isinstance(content, str):
            raise BackendError(f"{self._where} sent a malformed response (content is {type(content).__name__}).")
        return content or ""

    def generate(self, prompt: str, max_new_tokens: int = 512) -> str:
        """Original API: one user prompt in, text out."""
        return self.chat([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens)

    # ------------------------------------------------- LLM protocol: sizes
    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        # The server's tokenizer is not reachable in general; ~4 characters per token is
        # the usual English estimate and only guards the window check.
        return max(1, len(text) // 4)

    def describe(self) -> dict:
        return {"backend": "openai", "spec": self.spec, "source": self.source, "model": self.model,
                "base_url": self.base_url}

    # ------------------------------------------- LLM protocol: prefix state
    def prefill(self, messages: list[ChatMessage], *, progress: ProgressFn | None = None) -> int:
        n = sum(self.count_tokens(m["content"]) for m in messages)
        if n + 256 > self.context_window:
            raise ContextTooLongError(
                f"The document is about {n} tokens; the server model's window is set to {self.context_window} "
                "(pass context_window=... to Agent if the model's is larger)."
            )
        prefix: list[ChatMessage] = [dict(m) for m in messages]  # type: ignore[misc]
        # Warm the server's prefix cache now, so the first question does not pay for the
        # document; a server without prefix caching simply answers one short request.
        # The new prefix is kept only once that request succeeded.
        for _ in self._continue(prefix, "", max_new_tokens=1):
            pass
        if progress:
            progress(n, n)
        self._prefix = prefix
        return n

    @property
    def prefix_tokens(self) -> int:
        return sum(self.count_tokens(m["content"]) for m in self._prefix)

    def continue_chat(self, user_suffix: str, *, max_new_tokens: int = 256, temperature: float | None = None,
                      stop: list[str] | None = None) -> Iterator[str]:
        if not self._prefix:
            raise StateError("No prefix: memorize or load a document first.")
        return self._continue(self._prefix, user_suffix, max_new_tokens=max_new_tokens, temperature=temperature,
                              stop=stop)

    def _continue(self, prefix: list[ChatMessage], user_suffix: str, *, max_new_tokens: int,
                  temperature: float | None = None, stop: list[str] | None = None) -> Iterator[str]:
        messages = [dict(m) for m in prefix]
        messages[-1]["content"] = messages[-1]["content"] + user_suffix
        return self.stream_chat(messages, max_new_tokens=max_new_tokens, temperature=temperature,  # type: ignore[arg-type]
                                stop=stop)

    def save_prefix(self, directory: Path) -> dict:
        return write_message_prefix(directory, PREFIX_FILE, self._prefix, self.prefix_tokens)

    def load_prefix(self, directory: Path, info: dict) -> None:
        self._prefix = read_message_prefix(directory, info, PREFIX_FILE)

    def snapshot_prefix(self) -> list[ChatMessage] | None:
        return [dict(m) for m in self._prefix] or None  # type: ignore[misc]

    def restore_prefix(self, snapshot: list[ChatMessage] | None) -> None:
        self._prefix = [dict(m) for m in snapshot or []]  # type: ignore[misc]

    def twin(self, n_ctx: int = 8192) -> Agent:
        # The HTTP client is shared (it is stateless); the prefix is not.
        other = copy.copy(self)
        other._prefix = []
        return other


def agent_from_spec(spec: str, **kwargs: Any) -> Agent:
    """``openai:MODEL[@BASE_URL]``, ``azure:DEPLOYMENT@ENDPOINT``, ``deepseek:MODEL[@BASE_URL]``.

    Keys come from the environment: OPENAI_API_KEY, AZURE_OPENAI_API_KEY (+ OPENAI_API_VERSION),
    DEEPSEEK_API_KEY.
    """
    source, _, rest = spec.partition(":")
    source = source.lower()
    model, sep, url = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not model:
        raise BackendError(f"Spec {spec!r} names no model: use {source}:MODEL[@URL].")
    api: dict[str, str] = {}
    if source == "azure":
        api = {"endpoint": url or os.environ.get("AZURE_OPENAI_ENDPOINT", ""),
               "api_version": os.environ.get("OPENAI_API_VERSION", "2024-06-01")}
    elif url:
        api = {"base_url": url}
    allowed = {k: v for k, v in kwargs.items() if k in {"timeout", "max_retries", "context_window", "temperature"}}
    return Agent(model, source, api, spec=spec, **allowed)
