"""One normaliser in front of every detector (classification markers, export control, PII).

Detectors are ASCII regular expressions; text that *looks* the same to a reader can slip past
them: full-width `ＩＴＡＲ`, `＠`, full-width or Arabic-Indic digits, Cyrillic/Greek look-alikes
(`ІТАR` with Cyrillic І, Т, А), zero-width or other invisible format characters inside a word.
`normalise()` folds all of these to what a reader sees, so the detectors see it too:

1. NFKC (compatibility forms: full-width, ligatures, math alphanumerics, roman numerals …),
   applied per grapheme cluster (a base character with its combining marks);
2. invisible format characters (Unicode category Cf: zero-width space/joiners, BOM, soft hyphen,
   bidi controls) removed;
3. any decimal digit (category Nd) → its ASCII digit;
4. confusables: a non-ASCII character Unicode lists as confusable with ASCII → that ASCII text. The
   table is Unicode's `confusables.txt`, as shipped inside the `confusable_homoglyphs` wheel (read
   from the installed package; it only downloads when its CLI `update` command is run, which we never
   do). A capital letter whose prototype is `l` (Cyrillic І, Greek Ι) maps to `I`: Unicode's skeleton
   picks the lower-case l, a reader (and our case-insensitive detectors) sees the capital I.

Offsets: the normalised text can be shorter or longer than the original. `Normalised.span()` maps
a span found in the normalised text back to the original, so callers replace *in the original* text:
a sanitised chunk keeps the document's own characters everywhere except the placeholders, and quotes
of it stay verbatim. Detection only: the normalised text is never stored.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@lru_cache(maxsize=1)
def _confusables() -> dict[str, str]:
    from confusable_homoglyphs import utils

    out: dict[str, str] = {}
    for ch, glyphs in utils.load("confusables.json").items():
        if len(ch) != 1 or ch.isascii():
            continue
        targets = [g["c"] for g in glyphs if g["c"].isascii() and g["c"].isprintable() and g["c"].strip()]
        if not targets:
            continue
        target = targets[0]
        if target == "l" and "CAPITAL" in unicodedata.name(ch, ""):
            target = "I"
        out[ch] = target
    return out


def _fold(cluster: str) -> str:
    out = []
    table = _confusables()
    for c in unicodedata.normalize("NFKC", cluster):
        if c.isascii():
            out.append(c)
            continue
        cat = unicodedata.category(c)
        if cat == "Cf":
            continue
        if cat == "Nd":
            out.append(str(unicodedata.decimal(c)))
            continue
        out.append(c if unicodedata.combining(c) else table.get(c, c))
    return "".join(out)


@dataclass(frozen=True)
class Normalised:
    original: str
    text: str
    # For each character of `text`: the [start, end) of the original characters it came from
    # (None when nothing changed: the identity map).
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the normalised span [start, end)."""
        if self.starts is None or self.ends is None:
            return start, end
        if start >= end:
            at = self.starts[start] if start < len(self.starts) else len(self.original)
            return at, at
        return self.starts[start], self.ends[end - 1]

    def original_text(self, start: int, end: int) -> str:
        s, e = self.span(start, end)
        return self.original[s:e]


def normalise(text: str) -> Normalised:
    """Fold look-alike, compatibility and invisible characters (see the module docstring)."""
    if text.isascii():
        return Normalised(text, text)
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in _NON_ASCII.finditer(text):
        if m.start() > pos:  # an ASCII run: copied, offsets one to one
            parts.append(text[pos:m.start()])
            starts.extend(range(pos, m.start()))
            ends.extend(range(pos + 1, m.start() + 1))
        i, end = m.start(), m.end()
        # A combining mark belongs to the character before it (which may be the ASCII run's last one:
        # that character was already copied; the mark is folded on its own, which NFKC leaves as is).
        while i < end:
            j = i + 1
            while j < end and unicodedata.combining(text[j]):
                j += 1
            folded = _fold(text[i:j])
            parts.append(folded)
            starts.extend([i] * len(folded))
            ends.extend([j] * len(folded))
            i = j
        pos = end
    if pos < len(text):
        parts.append(text[pos:])
        starts.extend(range(pos, len(text)))
        ends.extend(range(pos + 1, len(text) + 1))
    return Normalised(text, "".join(parts), tuple(starts), tuple(ends))


def fold(text: str) -> str:
    """Just the normalised text (for checks that need no offsets)."""
    return normalise(text).text
