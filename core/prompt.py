"""The grounded prompt as a typed object: instructions, the user's context, numbered sources.

Document text is data, and it must never be able to change the prompt's structure, the citation
map or the user's preferences. So the structure is out of band:

- `Prompt` holds the parts as fields (sources as a typed list: number, header, text), is built by
  agents/answer.py, rendered to text exactly once per change (`system_message()`), and travels *with*
  the system message it rendered (`messages[0][PROMPT_KEY]`). Whatever reads the prompt back — the
  extractive responder (sources, preferences), composition (a merged, renumbered source list), OBSERVE
  (the user-context block), the skill step (a tool result as the next source) — reads these fields and
  builds a new `Prompt`; nothing re-parses the rendered text.
- `render()` escapes all untrusted text (source text and headers, the role text that carries earlier
  findings) so the text a generative model sees has the same single structure: a line of a document
  that starts like a source header (`[1] SOP-…`) is rendered `(1) SOP-…`, fence markers (`<<<`, `>>>`,
  so `SOURCES>>>`, `<<<USER_CONTEXT`) lose their angle brackets, and `[preference …]` is rendered
  `(preference …)`. That limits what text can *look like*; what a generative model does with
  instructions written in a document is a separate matter (the system prompt tells it they are data,
  and VERIFY/RedTeam check its answer against the sources either way).
- `wire()` drops the object before a message list goes to a model server (`core/llm/litellm_model.py`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SOURCES_START = "<<<SOURCES"
SOURCES_END = "SOURCES>>>"
USER_CONTEXT_START = "<<<USER_CONTEXT"
USER_CONTEXT_END = "USER_CONTEXT>>>"
PROMPT_KEY = "eap_prompt"  # the system message's key holding the Prompt it was rendered from

_FENCE = re.compile(r"<{3,}|>{3,}")
_HEADER_SHAPED = re.compile(r"^([ \t]*)\[(\d{1,3})\]", re.M)
_PREFERENCE_SHAPED = re.compile(r"\[(\s*preference\b)", re.I)
_PREFERENCE_KEY = re.compile(r"[a-z_]+")
_PREFERENCE_VALUE = re.compile(r"[A-Za-z_-]+")


def escape(text: str) -> str:
    """Untrusted text as it may appear inside the prompt: no fence markers, no line that starts like a
    source header, no preference marker. Words are kept (a model still reads what the document says)."""
    text = _FENCE.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    text = _HEADER_SHAPED.sub(r"\1(\2)", text)
    return _PREFERENCE_SHAPED.sub(r"(\1", text)


def escape_line(text: str) -> str:
    """A header (title, page, section path): one line, escaped."""
    return escape(" ".join(text.split()))


@dataclass(frozen=True)
class PromptSource:
    n: int
    header: str  # "title, p. N, section > path" for a chunk; "Tool …" for a tool result
    text: str
    tool: bool = False

    def render(self) -> str:
        return f"[{self.n}] {escape_line(self.header)}\n{escape(self.text)}"


@dataclass(frozen=True)
class UserContext:
    """What OBSERVE recalled, as the prompt shows it (`block`, with its own markers, built by
    agents/learning from cleaned memory text) and as the responder applies it (`preferences`)."""
    block: str
    preferences: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Only well-formed key=value pairs (the shape the responder ever honoured).
        clean = {k: v for k, v in self.preferences.items()
                 if _PREFERENCE_KEY.fullmatch(str(k)) and _PREFERENCE_VALUE.fullmatch(str(v))}
        object.__setattr__(self, "preferences", clean)


@dataclass(frozen=True)
class Prompt:
    instructions: str  # platform text
    role: str | None = None  # the specialist's prompt (+ earlier findings in a pipeline: escaped)
    user_context: UserContext | None = None
    sources: tuple[PromptSource, ...] = ()

    @property
    def preferences(self) -> dict[str, str]:
        return dict(self.user_context.preferences) if self.user_context else {}

    def render(self) -> str:
        head = f"{self.instructions}\n{escape(self.role)}" if self.role else self.instructions
        if self.user_context is not None and self.user_context.block:
            head = f"{head}\n\n{self.user_context.block}"
        body = "\n\n".join(s.render() for s in self.sources)
        return f"{head}\n\n{SOURCES_START}\n{body}\n{SOURCES_END}"

    def replace(self, **changes: Any) -> Prompt:
        if "sources" in changes:
            changes["sources"] = tuple(changes["sources"])
        return dataclasses.replace(self, **changes)

    def with_source(self, header: str, text: str, *, tool: bool = False) -> Prompt:
        """This prompt with one more source, numbered after the last."""
        return self.replace(sources=(*self.sources, PromptSource(len(self.sources) + 1, header, text, tool)))

    def system_message(self) -> dict[str, Any]:
        return {"role": "system", "content": self.render(), PROMPT_KEY: self}


def numbered(items: Iterable[tuple[str, str, bool]]) -> tuple[PromptSource, ...]:
    """(header, text, is_tool) → sources numbered from 1, in order."""
    return tuple(PromptSource(i, h, t, tool) for i, (h, t, tool) in enumerate(items, start=1))


def prompt_of(messages: list[dict[str, Any]]) -> Prompt | None:
    """The Prompt a message list's system message was rendered from (None for hand-written messages)."""
    for m in messages:
        p = m.get(PROMPT_KEY) if isinstance(m, dict) else None
        if isinstance(p, Prompt):
            return p
    return None


def wire(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as a model server receives them: text only."""
    return [{k: v for k, v in m.items() if k != PROMPT_KEY} if PROMPT_KEY in m else m for m in messages]
