"""LEARN's extraction: preferences, domain facts, context and goals from one user message — rules always,
the LIGHT model too with EAP_LLM_MEMORY_EXTRACTION and a generative model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from core import llm
from core.llm import Model
from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.settings import Settings

PREFERENCES: dict[tuple[str, str], str] = {
    ("answer_length", "short"): "Prefers short answers (one or two sentences).",
    ("answer_length", "detailed"): "Prefers detailed answers.",
    ("format", "bullets"): "Prefers answers as bullet points.",
    ("format", "prose"): "Prefers answers in prose, without bullet points.",
    ("units", "metric"): "Prefers metric (SI) units.",
    ("units", "imperial"): "Prefers imperial units (inches, pounds, psi).",
}
LANGUAGES = ("german", "english", "french", "spanish", "italian", "czech", "polish", "dutch", "portuguese",
             "hungarian", "slovak", "romanian", "swedish", "danish", "finnish", "turkish", "chinese", "japanese")
_CUE = re.compile(r"\b(i|we)\s+(?:would\s+|'d\s+)?(?:prefer|like|want|need)\b|\bplease\b|\balways\b|\bfrom now on\b|"
                  r"\bin future\b|\bkeep\b|\buse\b|\bgive me\b|\bbe\b|\banswer\b|\brespond\b|\breply\b|\bwrite\b",
                  re.I)
_NEGATION = re.compile(r"\b(don'?t|do not|never|no longer|not)\b", re.I)
_RULES: list[tuple[str, str, re.Pattern[str]]] = [
    ("answer_length", "short", re.compile(
        r"\b(short|brief|concise|succinct|shorter)(?:er)?\s+(answers?|replies|responses)\b|"
        r"\bkeep (?:it|them|(?:the |your )?answers?) (?:short|brief)\b|\bbe (?:brief|concise)\b|\btl;?dr\b", re.I)),
    ("answer_length", "detailed", re.compile(
        r"\b(detailed|longer|thorough|in-depth|more detailed|full)\s+(answers?|replies|responses|explanations?)\b|"
        r"\bmore detail\b", re.I)),
    ("format", "prose", re.compile(r"\bno bullet|\bwithout bullet|\b(?:in|as) (?:prose|full sentences|paragraphs?)\b",
                                   re.I)),
    ("format", "bullets", re.compile(r"\bbullet(?:ed)?(?:[- ]?(?:points?|lists?))?\b|\bas a list\b", re.I)),
    ("units", "metric", re.compile(r"\b(?:metric|si) (?:units?|system)\b|\buse (?:the )?metric\b", re.I)),
    ("units", "imperial", re.compile(r"\b(?:imperial|us customary|u\.s\.) (?:units?|system)\b|"
                                     r"\buse (?:inches|imperial)\b", re.I)),
]
_LANGUAGE = re.compile(r"\b(?:answer|respond|reply|write|talk|speak|answers?)\b[^.?!]{0,20}?\bin (" +
                       "|".join(LANGUAGES) + r")\b|\bauf deutsch\b", re.I)
_FACT = re.compile(r"^(?:fyi|note|remember(?: that)?|for (?:your )?info(?:rmation)?)?[:,]?\s*"
                   r"((?:our|my|we|in our|at our|on our)\b.{6,}\b(?:uses?|runs?|has|have|is|are|works?|produces?|"
                   r"follows?|needs?|requires?|calls?|call|gets?|takes?|consists?)\b.*)$", re.I)
_REMEMBER = re.compile(r"^(?:please )?remember(?: that)?[:,]?\s+(.{6,})$", re.I)
_CALL = re.compile(r"\bwe call\b", re.I)
_ROLE = re.compile(r"\bI(?:'m| am) (a|an|the) ([\w /-]{3,60}?)(?=$|[.,;!])", re.I)
_WORK = re.compile(r"\bI work (on|in|at|for|with) ([\w /-]{3,60}?)(?=$|[.,;!])", re.I)
_GOAL = re.compile(r"\b(?:my|our) (?:main |current |new )?(?:goal|objective|target|aim) (?:is|will be|for now is)"
                   r"(?: to)?[:\s]+(.{4,})$|^goal:\s*(.{4,})$|\bI(?:'m| am) trying to (.{4,})$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


@dataclass
class Item:
    type: str  # a memory type, or GOAL
    content: str
    key: str | None = None
    value: str | None = None
    source: str = "rules"

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "value": self.value, "content": self.content,
                "source": self.source}


def _sentences(message: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(message) if s and s.strip()]


def extract_rules(message: str) -> list[Item]:
    """Preferences, domain facts, context and goals stated in a message, by rules (deterministic)."""
    items: list[Item] = []
    seen: set[str] = set()
    for sent in _sentences(message):
        body = sent.rstrip(".!;")
        question = sent.endswith("?")
        cue = bool(_CUE.search(sent))
        for key, value, rx in _RULES:
            m = rx.search(sent)
            if not m or key in seen or not cue:
                continue
            if key != "format" and _NEGATION.search(sent[: m.start()]):
                continue  # "I don't want short answers": not a preference we can act on
            seen.add(key)
            items.append(Item("PREFERENCE", PREFERENCES[(key, value)], key, value))
        lang = _LANGUAGE.search(sent)
        if lang and "language" not in seen:
            name = (lang.group(1) or "german").lower()
            seen.add("language")
            items.append(Item("PREFERENCE", f"Prefers answers in {name.capitalize()}.", "language", name))
        if question:
            continue  # a question states nothing durable about facts, context or goals
        if g := _GOAL.search(body):
            goal = next(x for x in g.groups() if x).strip(" .")
            items.append(Item("GOAL", goal[0].upper() + goal[1:]))
            continue
        if m := _REMEMBER.match(body):
            items.append(Item("FACT", m.group(1).strip()))
        elif _FACT.match(body) or _CALL.search(body):
            items.append(Item("FACT", body))
        if (m := _ROLE.search(body)) and not _GOAL.search(body):
            items.append(Item("CONTEXT", f"The user is {m.group(1).lower()} {m.group(2).strip()}.", "role"))
        if m := _WORK.search(body):
            items.append(Item("CONTEXT", f"The user works {m.group(1).lower()} {m.group(2).strip()}.", "workplace"))
    return items


EXTRACTION_PROMPT = """You maintain the long-term memory of a manufacturing assistant. From the user's message
extract only durable statements: preferences about answers, facts about their plant, lines, machines,
procedures and vocabulary, context about the user (role, workplace), and goals they state. Ignore the
question itself. Reply with a JSON array only, each item
{"type": "PREFERENCE" | "FACT" | "CONTEXT" | "SKILL" | "GOAL", "content": "<one sentence>",
 "key": "answer_length" | "format" | "language" | "units" | null, "value": "<short|detailed|bullets|prose|
metric|imperial|a language name>" | null}. Nothing durable: []."""


def extract_llm(message: str, model: str, lm: Model) -> list[Item]:
    """The LIGHT model's extraction; raises ValueError on a reply that is not the asked-for JSON."""
    reply = lm.complete([{"role": "system", "content": EXTRACTION_PROMPT}, {"role": "user", "content": message}],
                        model=model).text
    start, end = reply.find("["), reply.rfind("]")
    if start == -1 or end < start:
        raise ValueError("no JSON array in the reply")
    data = json.loads(reply[start : end + 1])
    items = []
    for d in data if isinstance(data, list) else []:
        if not isinstance(d, dict) or not isinstance(d.get("content"), str) or not d["content"].strip():
            continue
        kind = str(d.get("type", "")).upper()
        if kind not in ("PREFERENCE", "FACT", "CONTEXT", "SKILL", "GOAL"):
            continue
        key, value = d.get("key"), d.get("value")
        key = key if isinstance(key, str) and key in ("answer_length", "format", "language", "units") else None
        value = str(value).lower() if key and value else None
        if key == "language" and value not in LANGUAGES:
            key = value = None
        elif key and key != "language" and (key, value) not in PREFERENCES:
            key = value = None
        items.append(Item(kind, d["content"].strip()[:300], key if kind == "PREFERENCE" else None,
                          value if kind == "PREFERENCE" else None, "llm"))
    return items


def extract(message: str, lm: Model, s: Settings) -> tuple[list[Item], str]:
    """(items, extractor). Rules always run for the canonical preference keys (the extractive responder and
    the prompt rely on them); with EAP_LLM_MEMORY_EXTRACTION the LIGHT model adds what rules miss, and if
    it fails or replies garbage the rules stand alone."""
    rules = extract_rules(message)
    model = s.llm_model_light or s.llm_model or EXTRACTIVE_MODEL
    if not s.llm_memory_extraction or llm.is_extractive(model):
        return rules, "rules"
    try:
        found = extract_llm(message, model, lm)
    except (llm.LLMUnavailable, ValueError) as exc:
        return rules, f"rules (model extraction failed: {str(exc)[:120]})"
    keys = {i.key for i in rules if i.key}
    merged = rules + [i for i in found if not (i.key and i.key in keys)
                      and not (i.type == "GOAL" and any(r.type == "GOAL" for r in rules))]
    return merged, f"rules + {model}"
