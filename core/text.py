"""The platform's word tokenizer, shared by the BM25 index (retrieval.lexical) and the extractive
responder (core.llm.extractive), so that a matching term is the same thing for both.

Lower-cased word tokens; identifiers such as `SOP-114` or `M8x1.25` are kept whole *and* split
into their parts; English stop words dropped; Snowball (Porter2) stemming, which is pure Python
and needs no data files.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import snowballstemmer

_TOKEN = re.compile(r"[0-9a-zà-ž]+(?:[-_./][0-9a-zà-ž]+)*")
STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her his how i if in into
    is it its me my no not of on or our she should so than that the their them then there these they this those
    to too was we were what when where which while who whom why will with would you your""".split()
)
@functools.lru_cache(maxsize=1)
def _stemmer() -> Any:
    return snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return word if word[0].isdigit() else _stemmer().stemWord(word)


def tokenize(text: str) -> list[str]:
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if re.search(r"[-_./]", tok):
            out.append(tok)
            parts = re.split(r"[-_./]", tok)
        else:
            parts = [tok]
        for p in parts:
            if p and p not in STOP_WORDS and (len(p) > 1 or p.isdigit()):
                out.append(_stem(p))
    return out
