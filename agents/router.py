"""Intent routing without a generative model: embedding similarity to each specialist's
description and example requests, plus keyword rules; ambiguous requests go to the Document
Analyst, and the trace says so."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from agents.specialists import DEFAULT, SPECIALISTS
from core.embedding import Embedder
from core.llm import Model

MIN_MARGIN = 0.005  # top-1 minus top-2 score below this is "ambiguous"
KEYWORD_WEIGHT = 0.06
# The task a request opens with ("Summarise …", "Calculate …") says which specialist does the work,
# whatever the topic (the topic steers retrieval): a summary of a quality report is document
# analysis, a scrap percentage is a calculation.
INTENT_MARGIN = 0.05  # the intent's specialist leads the best topic score by this much
_INTENTS = {
    "document_analyst": re.compile(r"^(please\s+)?(summari[sz]e|compare|contrast|give (me )?(an?\s+)?(short\s+)?"
                                   r"(overview|summary)|provide (me )?(an?\s+)?(short\s+)?(overview|summary))\b", re.I),
    "data_analyst": re.compile(r"^(please\s+)?(calculate|compute|convert|what is the (average|total|mean))\b", re.I),
}


@dataclass
class Route:
    specialist: str
    confidence: float
    scores: dict[str, float]
    fallback: bool
    reason: str


@functools.lru_cache(maxsize=4)
def _profiles(embedder: Embedder) -> tuple[list[str], np.ndarray]:
    keys = list(SPECIALISTS)
    texts, owners = [], []
    for k in keys:
        s = SPECIALISTS[k]
        for t in (s.description, *s.examples):
            texts.append(t)
            owners.append(k)
    vecs = embedder.embed(texts)
    prof = np.stack([vecs[[i for i, o in enumerate(owners) if o == k]] for k in keys])  # (K, n, d)
    return keys, prof


def route(question: str, embedder: Embedder) -> Route:
    keys, prof = _profiles(embedder)
    q = embedder.embed([question])[0]
    sims = prof @ q  # (K, n)
    # Mean of the best three matches: robust to one lucky example.
    base = np.sort(sims, axis=1)[:, -3:].mean(axis=1)
    low = question.lower()
    scores = {}
    intent = next((k for k, rx in _INTENTS.items() if rx.match(question.strip())), None)
    for i, k in enumerate(keys):
        hits = sum(1 for kw in SPECIALISTS[k].keywords if kw in low)
        scores[k] = float(base[i] + KEYWORD_WEIGHT * min(hits, 3))
    if intent:
        scores[intent] = max(scores.values()) + INTENT_MARGIN
    ranked = sorted(scores, key=lambda k: -scores[k])
    margin = scores[ranked[0]] - scores[ranked[1]]
    why = f" (task intent: {intent})" if intent else ""
    if margin < MIN_MARGIN:
        return Route(DEFAULT, margin, scores, True,
                     f"ambiguous between {ranked[0]} and {ranked[1]} (margin {margin:.3f}): Document Analyst{why}")
    return Route(ranked[0], margin, scores, False, f"best match {ranked[0]} (margin {margin:.3f}){why}")


def route_with_model(question: str, model: str, lm: Model) -> Route | None:
    """The optional LLM classifier (EAP_LLM_ROUTING=true with a model configured). Returns None when
    the reply is not one of the specialist keys; the caller then keeps the embedding route."""
    listing = "\n".join(f"- {k}: {s.description}" for k, s in SPECIALISTS.items())
    messages = [
        {"role": "system", "content": "Classify the user's request for a manufacturing assistant. Reply with exactly "
                                      f"one key from this list and nothing else:\n{listing}"},
        {"role": "user", "content": question},
    ]
    reply = lm.complete(messages, model=model).text.strip().lower()
    key = reply.strip(" .`'\"")
    if key not in SPECIALISTS:
        return None
    return Route(key, 1.0, {}, False, f"LLM classifier ({model}) chose {key}")
