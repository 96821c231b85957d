"""`ChatService`: one loaded chat model's own work, under every front end.

Built when a chat model loads, from its engine, tokenizer, chat template, manifest spec and
tool format. It owns what is not LangChain's or OpenAI's: plain message dicts rendered by
the checkpoint's template, the prompt fitted to the context (or refused), options resolved
against ``generation_config.json``, tools and response formats turned into grammars, the
engine `Request` built once; then the engine's events read back as typed events
(`events.TextDelta`, `events.ReasoningDelta`, `events.ToolCalls`, `events.Finished`). The
LangChain adapter, the server's routes and Ray's replicas only map their own shapes to these
and back. A reasoning model's ``<think>`` block is split from its answer as it streams, and a
grammar starts after it (`ortmodels.engine.reasoning`).

Messages are dicts: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``;
an assistant turn may add ``"tool_calls": [{"name", "arguments": dict, "id"}]``, a tool
result ``"tool_call_id"``, ``"name"`` and ``"error": True``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine, Request, SamplingParams
from ..engine import Finished as EngineFinished
from ..engine.chat_template import ChatTemplate
from ..engine.constraints import GrammarCompiler
from ..engine.dry import DEFAULT_BREAKERS, BreakerCache, DryParams
from ..engine.prompt_tokens import PromptTokenizer
from ..engine.reasoning import (
    TAGS,
    ReasoningGate,
    ReasoningSplitter,
    detect_reasoning,
    opens_reasoning,
    think_tokens,
)
from ..engine.sampling import LogitsProcessor
from ..engine.tokenizer import check_unicode, max_token_chars, token_piece
from ..engine.toolcalls import FORMATS, detect_format
from ..errors import ChatInputError, ContextLengthError, ModelFileError
from ..store.manifest import ChatSpec
from .conversation import template_messages
from .events import ChatEvent, Finished, ReasoningDelta, TextDelta, TokenLogprob, ToolCalls, Usage
from .options import ChatOptions
from .output_plan import OutputPlan

_DEFAULT_MAX_TOKENS = 512


def find_chat_template(export_folder: Path, checkpoint: Path) -> ChatTemplate | ModelFileError:
    """The export's chat template, else one added to the checkpoint folder since the export (no
    re-export needed), else the error that says where it belongs."""
    for folder in (export_folder, checkpoint):
        try:
            return ChatTemplate.from_folder(folder)
        except ModelFileError:
            continue
    return ModelFileError(
        checkpoint / "chat_template.jinja",
        "No chat template: this checkpoint has neither chat_template.jinja nor a chat_template in "
        "tokenizer_config.json",
        "Add the model's chat template as chat_template.jinja next to config.json (no re-export needed), "
        "or use plain-text completion (/v1/completions)",
    )


#: Characters a message counts for beyond its text before rendering: the least a template's role
#: markup takes (``<|im_start|>user\n...<|im_end|>\n``: 24), so 60,000 one-word messages are a
#: conversation past the context, not a template stopped at its size bound.
MESSAGE_CHARS = 24


def conversation_chars(messages: list[dict[str, str]]) -> int:
    """What a conversation counts for against the context before it is rendered."""
    return sum(len(m["content"]) + MESSAGE_CHARS for m in messages)


def keep_tail(messages: list[dict[str, str]], chars: int) -> list[dict[str, str]]:
    """The newest messages whose text (with `MESSAGE_CHARS` each) fits in ``chars`` (the newest
    one cut to its end if alone it is too long): what ``truncate_prompt`` keeps of a
    conversation far beyond the context."""
    kept: list[dict[str, str]] = []
    for message in reversed(messages):
        chars -= MESSAGE_CHARS
        if chars <= 0 and kept:
            break
        content = message["content"]
        if len(content) > max(chars, 0):
            content = content[-chars:] if chars > 0 else ""
        kept.append({**message, "content": content})
        chars -= len(content)
    return kept[::-1]


@dataclass
class Prepared:
    """One call ready to run: the engine request, how its output is read, when the call began."""

    request: Request
    plan: OutputPlan
    started: float = field(default_factory=time.perf_counter)
    reasoning: str | None = None
    """The reasoning format its output is split by (``None``: all of it is answer)."""
    inside: bool = False
    """The prompt opened the reasoning block: the output starts as reasoning."""


class ChatService:
    """Everything a chat model's `_load` opens, and the calls on it; replaced as a whole at each
    load, so a reader never sees half of it. Thread-safe: calls share the engine's decode steps."""

    def __init__(self, engine: Engine, tokenizer: Any, template: ChatTemplate | ModelFileError,
                 spec: ChatSpec, variant: str, device: str, grammars: GrammarCompiler,
                 token_chars: int | None = None, prompt_tokens: PromptTokenizer | None = None) -> None:
        self.engine, self.tokenizer, self._template = engine, tokenizer, template
        self.spec, self.variant, self.device = spec, variant, device
        self.grammars = grammars
        self.prompt_tokens = prompt_tokens or PromptTokenizer(tokenizer)
        """Chat prompts (only the template makes control tokens), text, and raw prompts as ids."""
        source = template.source if isinstance(template, ChatTemplate) else ""
        self.tool_format = FORMATS[spec.tool_format or detect_format(source)]
        self.prompt_chars = spec.context_length * (token_chars or max_token_chars(tokenizer))
        """More characters than this cannot fit in the context, whatever they say."""
        self.dry_breakers = BreakerCache(tokenizer)
        """DRY's sequence breakers as token sequences, per list (the vocabulary scanned once per list)."""
        self.reasoning_format = spec.reasoning_format or detect_reasoning(source)
        """``think-tags`` or ``none``: recorded at export, detected from the template in older exports."""
        self.think_tokens = think_tokens(tokenizer, self.reasoning_format)
        """The tags' ids when each is one token: what a budget and a grammar after the reasoning need."""

    @property
    def template(self) -> ChatTemplate:
        """The chat template, or the error that says where to put one (plain-text completion
        works without it)."""
        if isinstance(self._template, ModelFileError):
            raise self._template
        return self._template

    def close(self) -> None:
        self.engine.close()

    # -- prompts ------------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The exact text the model sees for ``messages``, rendered by the checkpoint's template."""
        return self.template.render(template_messages(messages), add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict[str, Any]], options: ChatOptions) -> list[int]:
        """The prompt ids a call with these messages and options runs: with ``truncate_prompt``,
        what is left once its oldest tokens make room for ``max_tokens``; without, the whole
        prompt, whether it fits or not (the count says by how much it does not)."""
        plan = self._plan(options)
        ids = self.prompt_tokens.encode_chat(self._chat_prompt(
            plan.messages(template_messages(messages, self.tool_format)), self._template_vars(plan, options),
            options.truncate_prompt))
        return self._fit(ids, options.max_tokens, True)[0] if options.truncate_prompt else ids

    def _plan(self, options: ChatOptions) -> OutputPlan:
        plan = OutputPlan.from_options(options.output(), self.tool_format, self.grammars, self.tokenizer)
        plan.stop = tuple(options.stop or ())
        return plan

    def _cut(self, chars: int, truncate: bool, what: str, field: str = "messages") -> bool:
        """Whether ``chars`` characters must be cut to `prompt_chars` (``truncate_prompt``); the
        error that says so when they may not be. Decided before any tokenizing."""
        if chars <= self.prompt_chars:
            return False
        if not truncate:
            raise ContextLengthError(
                f"{what} has {chars:,} characters; the context of {self.spec.context_length} tokens holds at most "
                f"{self.prompt_chars:,} with this tokenizer.", field, "Shorten it", "text")
        return True

    @staticmethod
    def _template_vars(plan: OutputPlan, options: ChatOptions) -> dict[str, Any]:
        """The template's variables: the tool format's, and ``enable_thinking`` where it is set."""
        thinking = options.thinking()
        return plan.template_vars if thinking is None else {**plan.template_vars, "enable_thinking": thinking}

    def _chat_prompt(self, converted: list[dict[str, Any]], template_vars: dict[str, Any], truncate: bool) -> str:
        """The rendered conversation, for `PromptTokenizer.encode_chat`: the caller's text is escaped
        before rendering, so the template's markup is the only source of special tokens."""
        bound = self.prompt_chars
        if self._cut(conversation_chars(converted), truncate, "The conversation (its markup counted)"):
            converted = keep_tail(converted, bound)
        escape = self.prompt_tokens.escape
        prompt = self.template.render(escape(converted), add_generation_prompt=True, max_chars=2 * bound,
                                      **escape(template_vars or {}))
        if self._cut(len(prompt), truncate, "The rendered prompt"):
            prompt = prompt[-bound:]
        return prompt

    def _fit(self, ids: list[int], max_tokens: int | None, truncate: bool,
             field: str = "messages") -> tuple[list[int], int]:
        """Prompt ids and tokens to generate within the context: the overflow is refused, naming
        it in tokens, or (``truncate_prompt``) the oldest tokens are dropped."""
        context = self.spec.context_length
        asked = max_tokens is not None
        if max_tokens is None:  # not asked for: as many as fit, up to the default
            default = int(self.spec.generation.get("max_new_tokens") or _DEFAULT_MAX_TOKENS)
            max_tokens = max(1, min(default, context - len(ids)))
        overflow = len(ids) + max_tokens - context
        if overflow > 0:
            if max_tokens >= context:
                raise ContextLengthError(
                    f"max_tokens ({max_tokens}) alone fills the context of {context} tokens; lower it.", "max_tokens")
            if not truncate and not asked:  # the prompt alone: a max_tokens nobody set is not the problem
                what = "conversation" if field == "messages" else "prompt"
                raise ContextLengthError(
                    f"Prompt ({len(ids)} tokens) leaves no room for an answer in the context of {context} tokens "
                    f"(it is {overflow} too long).", field, f"Shorten the {what}")
            if not truncate:
                raise ContextLengthError(
                    f"Prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the context of "
                    f"{context} tokens by {overflow}.", field,
                    f"Shorten the {'conversation' if field == 'messages' else 'prompt'}, lower max_tokens")
            ids = ids[overflow:]
        return ids, max_tokens

    def sampling(self, options: ChatOptions) -> SamplingParams:
        """The options' sampling, the rest from ``generation_config.json`` as transformers reads it."""
        defaults = self.spec.generation

        def pick(name: str, default: Any) -> Any:
            for value in (getattr(options, name), defaults.get(name)):
                if value is not None:
                    return value
            return default

        if options.temperature is not None:
            temperature = float(options.temperature)
        elif defaults.get("do_sample"):  # as in transformers: the config samples only if it says so
            temperature = float(defaults.get("temperature", 1.0))
        else:
            temperature = 0.0
        return SamplingParams(
            temperature=temperature,
            top_p=float(pick("top_p", 1.0)),
            top_k=int(pick("top_k", 50)),  # transformers' default when sampling
            repetition_penalty=float(pick("repetition_penalty", 1.0)),
            seed=pick("seed", None),
            dry=self._dry(options),
        )

    def _dry(self, options: ChatOptions) -> DryParams | None:
        """DRY's settings with llama.cpp's defaults, or None when its multiplier is 0 (its default: off)."""
        multiplier = float(options.dry_multiplier or 0.0)
        if multiplier == 0.0 or options.dry_penalty_last_n == 0:
            return None
        return DryParams(
            multiplier=multiplier,
            base=1.75 if options.dry_base is None else float(options.dry_base),
            allowed_length=2 if options.dry_allowed_length is None else options.dry_allowed_length,
            penalty_last_n=-1 if options.dry_penalty_last_n is None else options.dry_penalty_last_n,
            breakers=self.dry_breakers.get(options.dry_sequence_breakers or DEFAULT_BREAKERS),
        )

    # -- calls ----------------------------------------------------------------------------------

    def prepare(self, messages: list[dict[str, Any]], options: ChatOptions) -> Prepared:
        """A conversation's engine request: tools or a response format turned into a grammar, the
        prompt rendered, tokenized and fitted to the context."""
        started = time.perf_counter()
        params = self.sampling(options)
        plan = self._plan(options)
        converted = plan.messages(template_messages(messages, self.tool_format))
        prompt = self._chat_prompt(converted, self._template_vars(plan, options), options.truncate_prompt)
        ids, max_tokens = self._fit(self.prompt_tokens.encode_chat(prompt), options.max_tokens,
                                    options.truncate_prompt)
        reasoning = self.reasoning_format if self.reasoning_format in TAGS else None
        inside = reasoning is not None and opens_reasoning(prompt, reasoning)
        request = Request(ids, params, max_tokens=max_tokens, stop=plan.stop, eos_token_ids=self.spec.eos_token_ids,
                          processor=self._processor(plan, options, inside), logprobs=options.logprob_alternatives())
        return Prepared(request, plan, started, reasoning, inside)

    def _processor(self, plan: OutputPlan, options: ChatOptions, inside: bool) -> LogitsProcessor | None:
        """The request's logits processor: the plan's grammar, behind a `ReasoningGate` where the
        model reasons first (the grammar after the reasoning, a budget, thinking forced on or off)."""
        grammar = plan.processor
        budget = options.budget()
        if self.reasoning_format not in TAGS:
            return grammar  # no reasoning to make room for; a budget has nothing to cut
        tokens = self.think_tokens
        if tokens is None:
            if options.reasoning_budget not in (None, -1, 0):
                raise ChatInputError(
                    f"reasoning_budget needs {' and '.join(TAGS[self.reasoning_format])} to be single tokens of "
                    "this model's vocabulary, and they are not: leave it out, or give 0 (no reasoning).")
            return grammar  # the grammar from the first token, as without reasoning
        force_open = options.thinking() is True and not inside
        if grammar is None and budget is None and not force_open:
            return None  # the model reasons as it likes; the text is split as it streams
        if grammar is None and budget == 0 and not inside and options.reasoning_budget != 0:
            return None  # thinking off, no block opened: nothing to cut (tags it writes are still read)
        source = getattr(getattr(grammar, "grammar", None), "source", None)
        whole = isinstance(source, str) and TAGS[self.reasoning_format][0] in source
        # an answer a grammar must give (not a lazy tool call the model may never start): no end before it
        held = grammar is not None and getattr(grammar, "trigger_token", None) is None
        return ReasoningGate(tokens, inside=inside, budget=budget, force_open=force_open,
                             may_open=options.thinking() is not False, answer=grammar, whole=whole,
                             end_ids=tuple(self.spec.eos_token_ids) if held else (),
                             ban_open=options.reasoning_budget == 0)

    def prepare_text(self, prompt: str, options: ChatOptions) -> Prepared:
        """``prompt`` continued as it is, without the chat template (OpenAI's ``/v1/completions``):
        the caller's whole prompt, its special tokens parsed, a BOS where the model wants one;
        a ``response_format`` grammar holds the continuation as it holds a chat answer."""
        started = time.perf_counter()
        if not isinstance(prompt, str) or not prompt:
            raise ChatInputError("The prompt must be a non-empty string.")
        try:
            check_unicode(prompt, "The prompt")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
        if given := [name for name, value in options.output().items()
                     if value and value != "none" and name != "response_format"]:
            raise ChatInputError(
                f"{', '.join(given)} cannot shape a plain prompt's continuation (no chat template, no tools or "
                "log-probabilities here; a response_format grammar is): send the prompt as chat messages instead.")
        plan = OutputPlan.from_options({"response_format": options.response_format}, self.tool_format,
                                       self.grammars, self.tokenizer)
        params = self.sampling(options)
        if self._cut(len(prompt), options.truncate_prompt, "The prompt", "prompt"):
            prompt = prompt[-self.prompt_chars:]
        ids, max_tokens = self._fit(self.prompt_tokens.encode_raw(prompt), options.max_tokens,
                                    options.truncate_prompt, "prompt")
        request = Request(ids, params, max_tokens=max_tokens, stop=tuple(options.stop or ()),
                          eos_token_ids=self.spec.eos_token_ids, processor=plan.processor)
        return Prepared(request, plan, started)

    def stream(self, prepared: Prepared) -> Iterator[ChatEvent]:
        """The call's events; other calls share its decode steps. Closing the iterator early
        cancels the request at once."""
        reader = _Reader(self, prepared)
        for event in self.engine.generate(prepared.request):
            yield from reader.read(event)

    async def astream(self, prepared: Prepared) -> AsyncIterator[ChatEvent]:
        """As `stream`, on the event loop: a cancelled task (or the iterator closed) cancels the request."""
        reader = _Reader(self, prepared)
        async for event in self.engine.agenerate(prepared.request):
            for mapped in reader.read(event):
                yield mapped


class _Reader:
    """One call's engine events as service events (the one mapping, for both streams).

    With tools offered, the text is held until the end and read as content plus calls.
    """

    def __init__(self, service: ChatService, prepared: Prepared) -> None:
        self.service, self.plan, self.started = service, prepared.plan, prepared.started
        self.first: float | None = None
        self.held: list[str] = []
        self.splitter = (ReasoningSplitter(prepared.reasoning, inside=prepared.inside)
                         if prepared.reasoning is not None else None)
        self.ids: list[int] = []  # the output's tokens so far (a reasoning model's only)
        self.closed_at: int | None = None  # the tokens up to the reasoning's closing tag, its last one included

    def read(self, event: Any) -> list[ChatEvent]:
        if not isinstance(event, EngineFinished):
            if self.first is None and event.token_ids:
                self.first = time.perf_counter() - self.started
            if self.splitter is None:
                return self._answer(event.text, event.logprobs)
            self.ids.extend(event.token_ids)
            reasoning, answer = self.splitter.feed(event.text)
            self._note_close()
            # a reasoning token's log-probability is not reported: OpenAI's logprobs are the content's
            logprobs = event.logprobs if answer or not (reasoning or self.splitter.in_reasoning) else ()
            return [*self._reasoning(reasoning), *self._answer(answer, logprobs)]
        events: list[ChatEvent] = []
        if self.splitter is not None:
            reasoning, answer = self.splitter.flush()
            self._note_close()
            events += [*self._reasoning(reasoning), *self._answer(answer, ())]
        reason = event.reason
        if self.plan.tool_format is not None:
            content, calls, reason = self.plan.finish("".join(self.held), reason)
            if content or calls:
                events.append(ToolCalls(content, tuple(calls)))
        first = self.first if self.first is not None else event.time_to_first_token_s
        usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens,
                      min(self._reasoning_tokens(), event.completion_tokens))
        events.append(Finished(reason, usage, first, self.service.variant, self.service.device, event.stop_sequence))
        return events

    def _note_close(self) -> None:
        """Once the splitter has read the closing tag: how many tokens it took to write it, by
        the token, not by the event whose text showed it (a tag cut across tokens, or text held
        back by a stop string, shows up one or more tokens late). The fewest whose text holds
        the tag, found by halving: a few decodes, once per answer."""
        assert self.splitter is not None
        if self.closed_at is not None or not self.splitter.closed:
            return
        tag, low, high = self.splitter.close_tag, 0, len(self.ids)
        while low < high:
            middle = (low + high) // 2
            if tag in self.service.tokenizer.decode(self.ids[:middle], skip_special_tokens=True):  # as the engine's text
                high = middle
            else:
                low = middle + 1
        self.closed_at = high

    def _reasoning_tokens(self) -> int:
        """The output's tokens from its start through the reasoning's closing tag (the tags and
        the blanks around them included); all of them when the block never closed; 0 without one."""
        if self.splitter is None or not self.splitter.opened:
            return 0
        return len(self.ids) if self.closed_at is None else self.closed_at

    @staticmethod
    def _reasoning(text: str) -> list[ChatEvent]:
        return [ReasoningDelta(text)] if text else []

    def _answer(self, text: str, logprobs: Any) -> list[ChatEvent]:
        """Answer text as a `TextDelta`, or held whole when tools were offered."""
        if self.plan.tool_format is not None:
            self.held.append(text)
            return []
        if not text and not logprobs:
            return []
        return [TextDelta(text, tuple(self._logprob(lp) for lp in logprobs))]

    def _logprob(self, logprob: Any) -> TokenLogprob:
        """A token's text (U+FFFD for part of a character, as a decode gives it) and, for such a
        part, its own bytes, for it and each alternative."""
        pieces = [token_piece(self.service.tokenizer, token)
                  for token in (logprob.token_id, *(token for token, _ in logprob.top))]
        texts = [piece if isinstance(piece, str) else "\ufffd" for piece in pieces]
        raw = tuple(piece if isinstance(piece, tuple) else None for piece in pieces)
        return TokenLogprob(texts[0], logprob.logprob,
                            tuple((text, value) for text, (_, value) in zip(texts[1:], logprob.top)),
                            raw if any(b is not None for b in raw) else ())
