"""The grounded extractive responder: a LiteLLM custom provider that answers from the sources in
the prompt, without a generative model.

It reads the numbered sources of the prompt, ranks their sentences against the question (embedding
similarity + term overlap), quotes the best few with [n] citations and says plainly that the answer is
extractive. Deterministic: same prompt, same answer.

It also honours the user's remembered preferences (written by OBSERVE) as far as it can without a
generative model: answer length (short: the best two sentences as one paragraph; detailed: up to six),
format (bullets or prose), and says which preferences (language, units) it cannot apply to quoted text.

Sources and preferences are read from the typed `core.prompt.Prompt` that travels with the system
message, never from the rendered text: a document cannot add a source, renumber one, end the source
list or set a preference by containing text shaped like the prompt's markers. A quoted sentence's own
`[n]`-shaped text is written `(n)`, so the only citation markers in an answer are the responder's.
Hand-written message lists without a Prompt (tests, tools) are still parsed from their text.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.embedding import Embedder
from core.prompt import SOURCES_END, SOURCES_START, USER_CONTEXT_END, USER_CONTEXT_START, Prompt, prompt_of
from core.text import tokenize

__all__ = ["MODEL", "NO_ANSWER", "PREFIX", "PROVIDER", "SOURCES_END", "SOURCES_START", "USER_CONTEXT_END",
           "USER_CONTEXT_START", "build_handler", "compose"]

PROVIDER = "eap-extractive"
MODEL = f"{PROVIDER}/grounded"
NO_ANSWER = ("I could not find an answer to this question in the documents you have access to. "
             "Try rephrasing it, or ask a data steward whether the relevant document has been ingested.")
PREFIX = "Extractive answer (quoted from your documents; no generative model was used):"
MAX_SENTENCES = 4
MIN_SCORE = 0.32
REDUNDANT = 0.92
MAX_CANDIDATES = 48  # sentences embedded per answer (see compose)

_HEADER = re.compile(r"^\[(\d+)\][^\n]*$", re.M)
_HEADER_PREFIX = re.compile(r"^\[\d+\]\s*|\bp\. \d+\b")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
_PREFERENCE = re.compile(r"\[preference ([a-z_]+)=([A-Za-z_-]+)\]")
_MARKER_SHAPED = re.compile(r"\[(\d{1,3})\]")
SHORT_SENTENCES = 2
DETAILED_SENTENCES = 6


@dataclass
class Source:
    n: int
    text: str
    header: str = ""  # "title, p. N, section > path" as the prompt builder wrote it


def sources_of(prompt: Prompt) -> list[Source]:
    """The typed sources, as the responder ranks them (the header as `[n] header`, for term overlap)."""
    return [Source(src.n, src.text.strip(), f"[{src.n}] {src.header}") for src in prompt.sources if src.text.strip()]


def parse_sources(prompt: str) -> list[Source]:
    """Sources of a hand-written prompt's text (a message list without a `Prompt`)."""
    start = prompt.find(SOURCES_START)
    end = prompt.find(SOURCES_END, start + 1)
    if start == -1 or end == -1:
        return []
    block = prompt[start + len(SOURCES_START) : end]
    heads = list(_HEADER.finditer(block))
    out = []
    for i, m in enumerate(heads):
        body = block[m.end() : heads[i + 1].start() if i + 1 < len(heads) else len(block)].strip()
        if body:
            out.append(Source(int(m.group(1)), body, m.group(0)))
    return out


def user_preferences(prompt: str) -> dict[str, str]:
    """`[preference key=value]` markers of the USER_CONTEXT block (none when there is no block)."""
    start = prompt.find(USER_CONTEXT_START)
    end = prompt.find(USER_CONTEXT_END, start + 1)
    if start == -1 or end == -1:
        return {}
    return dict(_PREFERENCE.findall(prompt[start:end]))


def _is_heading(s: str, header: str) -> bool:
    """A title or section heading is a label, not an answer: the source's own title/section path, or a
    short line without sentence punctuation or numbers ("Corrective actions")."""
    bare = s.rstrip(" .:").lower()
    if bare and bare in header.lower():
        return True
    return s[-1] not in ".!?;:)" and len(s.split()) <= 5 and not any(c.isdigit() for c in s)


@dataclass(frozen=True)
class _Sentence:
    n: int  # the source's number
    text: str
    line: int  # the line (paragraph, list item, definition) of the source it stands in
    pos: int  # its place among the source's sentences (document order)
    term: str | None  # the definition term right above its line ("autovacuum_naptime ( integer )", "-j njobs")
    line_text: str = ""  # that line, and where the sentence starts in it (quotations are cut from it verbatim)
    start: int = 0
    entry: int = 0  # the definition entry: lines after one term up to the next share it (else: its own line)


# A line that names what the next line defines: short, no sentence end, and shaped like a term (a
# parameter or option name, a signature, a value in parentheses) rather than a section heading.
_TERMISH = re.compile(r"[(_=/]|^-{1,2}\w|^\S+$")


def _unbullet(line: str) -> str:
    """A line without its list bullet (a definition list may reach the responder rendered as a list)."""
    line = line.strip()
    return line[2:].strip() if line.startswith(("- ", "• ")) else line


def _is_term(line: str) -> bool:
    line = _unbullet(line)
    return (0 < len(line) <= 100 and len(line.split()) <= 12 and line[-1] not in ".!?:;,"
            and bool(_TERMISH.search(line)))


def _sentences(src: Source) -> list[_Sentence]:
    out: list[_Sentence] = []
    lines = src.text.split("\n")
    entry, in_entry, prev_is_term = 0, False, False
    for li, line in enumerate(lines):
        is_term = _is_term(line)
        term = _unbullet(lines[li - 1]) if prev_is_term and not is_term else None
        prev_is_term = is_term
        if is_term:  # a term opens an entry; the lines after it belong to it until the next term
            entry, in_entry = li, True
        elif not in_entry:
            entry = li
        cursor = 0
        for part in _SPLIT.split(line):
            s = part.strip(" -•\t")
            at = line.find(s, cursor) if s else -1
            cursor = at + len(s) if at >= 0 else cursor
            if len(s) >= 12 and sum(c.isalpha() for c in s) >= 6 and not _is_heading(s, src.header):
                out.append(_Sentence(src.n, s, li, len(out), term, line, max(at, 0), entry))
    return out


# What kind of fact a question asks for. A question about a default wants the sentence that states the
# default; one about a quantity wants a number. The sentence that matches the question best is often the
# one that defines the thing ("Specifies the minimum delay between autovacuum runs"), and the fact is the
# next sentence of the same entry ("The default is one minute (1min)."): both are quoted, with the entry's
# term, so the answer carries the fact with its context (benchmarks/quality.py --dev-only).
_ASKS_DEFAULT = re.compile(
    r"\bdefaults?\b|\bout of the box\b|\b(if|when) (i|you|we) (do not|don't|never) (configure|set|change|say|"
    r"specify|pass|give)|\bwithout (saying|setting|specifying|passing|configuring|giving)|\bunless (i|you) ", re.I)
_ASKS_VALUE = re.compile(
    r"\bhow (many|much|long|big|large|often|far|old|high|low)\b|\b(maximum|minimum|max|min|limit|size|length|"
    r"number of|timeout|value|version)\b", re.I)
_HAS_NUMBER = re.compile(r"\d|\b(zero|one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|hundred|"
                         r"thousand|million|billion|half|twice|once)\b", re.I)
_HAS_DEFAULT = re.compile(r"\bdefault", re.I)
DEFAULT_BONUS = 0.15
NUMBER_BONUS = 0.05
MAX_SPAN = 5  # sentences one quotation may run over (the chosen one, its entry's fact and what stands between)


def _carries(s: str, asks_default: bool, asks_value: bool) -> bool:
    """Whether a sentence states the kind of fact the question asks for."""
    if asks_default:
        return bool(_HAS_DEFAULT.search(s))
    return asks_value and bool(_HAS_NUMBER.search(s))


def _with_context(i: int, all_sents: list[_Sentence], asks_default: bool,
                  asks_value: bool) -> list[list[_Sentence]]:
    """A chosen sentence with what makes it an answer, as quotations (each one contiguous in one line): for a
    question asking for a default or a quantity, the sentence of the same entry that states it (same line:
    one quotation; a later paragraph of the entry: a second one), and the line's first sentence when the
    chosen one is the fact itself (what "The default is 50 tuples." is the default of)."""
    me = all_sents[i]
    defined = next((x for x in all_sents if x.n == me.n and x.line == me.line + 1 and x.term == me.text), None)
    if defined is not None:  # a definition term on its own says nothing: quote its definition
        me = defined
    if not (asks_default or asks_value):
        return [[me]]
    same = [x for x in all_sents if x.n == me.n and x.line == me.line]
    if _carries(me.text, asks_default, asks_value):
        group = [same[0], me] if same and same[0].pos < me.pos else [me]
        return [group] if group[-1].pos - group[0].pos < MAX_SPAN else [[me]]
    entry = [x for x in all_sents if x.n == me.n and x.entry == me.entry and x.pos > me.pos]
    carrier = next((x for x in entry if _carries(x.text, asks_default, asks_value)), None)
    if carrier is None:
        return [[me]]
    if carrier.line == me.line and carrier.pos - me.pos < MAX_SPAN:
        return [[me, carrier]]
    return [[me], [carrier]]  # too far apart for one quotation: each verbatim


def _quote(group: list[_Sentence]) -> str:
    """One entry's sentences as one quotation, cut verbatim from its line (the sentences between them
    included), with the entry's term in front when the quotation starts the line right after it."""
    first, last = group[0], group[-1]
    span = first.line_text[first.start : last.start + len(last.text)] if last.start >= first.start else first.text
    before = first.line_text[: first.start].strip()  # nothing, or the line's bullet ("-")
    lead = " ".join(p for p in (first.term, before) if p) + " " if first.term and not before.strip("-•") else ""
    return _defang(lead + span)


def _question(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else " ".join(
                p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def compose(messages: list[dict[str, Any]]) -> str:
    from core.embedding import get_embedder

    typed = prompt_of(messages)
    if typed is not None:
        prefs, sources = typed.preferences, sources_of(typed)
    else:
        prompt = "\n".join(
            m["content"] for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str)
        )
        prefs, sources = user_preferences(prompt), parse_sources(prompt)
    question = _question(messages)
    length = prefs.get("answer_length")
    most = {"short": SHORT_SENTENCES, "detailed": DETAILED_SENTENCES}.get(length or "", MAX_SENTENCES)
    context = {src.n: set(tokenize(_HEADER_PREFIX.sub("", src.header))) for src in sources}
    every = [s for src in sources for s in _sentences(src)]
    if not question.strip() or not every:
        return NO_ANSWER
    sents = every
    q_terms = set(tokenize(question))
    # Term overlap counts the passage's title and section too: questions often name the document or
    # section ("corrective actions of QR-2026-044") rather than words of the answering sentence; and the
    # definition term above the sentence ("autovacuum_naptime ( integer )"), which names what it defines.
    overlap = np.array([len(q_terms & (set(tokenize(x.text)) | set(tokenize(x.term or "")) | context[x.n]))
                        / max(1, len(q_terms)) for x in sents])
    if len(sents) > MAX_CANDIDATES:
        # Long pages: embedding every sentence of every source per question was most of an answer's time
        # (1.6-2 s for a manual's pages). Only the sentences with the most question terms (ties: earlier
        # sources first) are embedded; a sentence sharing no term with the question and its source's title
        # rarely outranks those that do.
        keep = sorted(np.argsort(-overlap, kind="stable")[:MAX_CANDIDATES].tolist())
        sents, overlap = [sents[i] for i in keep], overlap[keep]
    emb = get_embedder()
    q = emb.embed([question])[0]
    sv = _sentence_vectors(emb, [x.text for x in sents])
    cos = sv @ q
    asks_default, asks_value = bool(_ASKS_DEFAULT.search(question)), bool(_ASKS_VALUE.search(question))
    bonus = np.array([(DEFAULT_BONUS if asks_default else NUMBER_BONUS)
                      if _carries(x.text, asks_default, asks_value) else 0.0 for x in sents])
    score = 0.75 * cos + 0.25 * overlap + bonus
    chosen: list[int] = []
    for i in np.argsort(-score, kind="stable"):
        if score[i] < MIN_SCORE or len(chosen) >= most:
            break
        if any(float(sv[i] @ sv[j]) > REDUNDANT for j in chosen):
            continue
        chosen.append(int(i))
    if not chosen:
        return NO_ANSWER
    quoted: list[str] = []
    used: set[tuple[int, int]] = set()  # (source, sentence) already quoted, as a choice or as its context
    for i in chosen:
        if (sents[i].n, sents[i].pos) in used:
            continue
        for group in _with_context(every.index(sents[i]), every, asks_default, asks_value):
            group = [x for x in group if (x.n, x.pos) not in used]
            if not group:  # a definition term whose definition is quoted already
                continue
            used.update((x.n, x.pos) for x in group)
            quoted.append(f"{_quote(group)} [{sents[i].n}]")
    prose = prefs.get("format") == "prose" or (length == "short" and prefs.get("format") != "bullets")
    body = " ".join(quoted) if prose else "\n".join(f"- {q}" for q in quoted)
    return PREFIX + "\n" + body + "".join(f"\n{n}" for n in _preference_notes(prefs))


# Sentence vectors by (embedder, sentence): the same passages answer many questions. Bounded; per process.
_VECTORS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_VECTORS_MAX = 20_000
_VECTORS_LOCK = threading.Lock()


def _sentence_vectors(emb: Embedder, texts: list[str]) -> np.ndarray:
    with _VECTORS_LOCK:
        cached = {t: _VECTORS[(emb.name, t)] for t in texts if (emb.name, t) in _VECTORS}
    missing = list(dict.fromkeys(t for t in texts if t not in cached))
    if missing:
        fresh = emb.embed(missing)
        with _VECTORS_LOCK:
            for t, v in zip(missing, fresh, strict=True):
                _VECTORS[(emb.name, t)] = cached[t] = v
            while len(_VECTORS) > _VECTORS_MAX:
                _VECTORS.popitem(last=False)
    return np.stack([cached[t] for t in texts]) if texts else np.zeros((0, emb.dim), dtype=np.float32)


def _defang(sentence: str) -> str:
    """A document's own `[n]` is text, not a citation: quoted as `(n)`."""
    return _MARKER_SHAPED.sub(r"(\1)", sentence)


def _preference_notes(prefs: dict[str, str]) -> list[str]:
    """What the user sees of their preferences (no digits: notes must not trip number verification)."""
    notes = []
    if prefs.get("answer_length") == "short":
        notes.append("(Short answer, as you prefer: only the best matching sentences are quoted.)")
    if prefs.get("language") and prefs["language"].lower() != "english":
        notes.append(f"(You prefer answers in {prefs['language'].capitalize()}: quoted text stays in the "
                     "language of the documents; a generative model would translate it.)")
    if prefs.get("units") in ("metric", "imperial"):
        notes.append(f"(You prefer {prefs['units']} units: values are quoted as the documents state them.)")
    return notes


def _words(text: str) -> Iterator[str]:
    for m in re.finditer(r"\S+\s*", text):
        yield m.group(0)


def build_handler() -> Any:
    """The LiteLLM CustomLLM subclass (built lazily: importing litellm costs ~1 s)."""
    import litellm
    from litellm import CustomLLM
    from litellm.types.utils import GenericStreamingChunk

    class ExtractiveLLM(CustomLLM):
        def completion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            text = compose(messages)
            resp = litellm.ModelResponse(
                model=MODEL,
                choices=[{"message": {"role": "assistant", "content": text}, "finish_reason": "stop", "index": 0}],
            )
            # ModelResponse sets usage and _response_ms dynamically; its stub declares neither.
            resp.usage = litellm.Usage(  # type: ignore[attr-defined]
                prompt_tokens=sum(len(str(m.get("content", "")).split()) for m in messages),
                completion_tokens=len(text.split()), total_tokens=0)
            resp._response_ms = (time.perf_counter() - t0) * 1000  # type: ignore[attr-defined]
            return resp

        def streaming(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Iterator[Any]:
            text = compose(messages)
            for word in _words(text):
                yield GenericStreamingChunk(text=word, is_finished=False, finish_reason="", usage=None, index=0,
                                            tool_use=None)
            yield GenericStreamingChunk(text="", is_finished=True, finish_reason="stop", usage=None, index=0,
                                        tool_use=None)

        async def acompletion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
            return self.completion(model, messages, *args, **kwargs)

        async def astreaming(  # type: ignore[override] # litellm's stub declares a coroutine; it iterates
            self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any
        ) -> AsyncIterator[Any]:
            for chunk in self.streaming(model, messages, *args, **kwargs):
                yield chunk

    return ExtractiveLLM()
