"""Lexical analysis for the BM25 index: the same tokenizer (core.text) at index and query time, and
the BM25 parameters the index writer (write-time impacts) and the search (query-time formula) share.
"""

from __future__ import annotations

from collections import Counter

from core.text import tokenize

__all__ = ["B", "K1", "term_frequencies", "tokenize"]

# BM25 parameters (Robertson/Lucene defaults).
K1 = 1.2
B = 0.75


def term_frequencies(text: str) -> tuple[Counter, int]:
    terms = tokenize(text)
    return Counter(terms), len(terms)
