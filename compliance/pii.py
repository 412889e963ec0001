"""Offline PII detection and sanitisation with pattern recognizers (no models, no downloads).

Detected spans are replaced by typed placeholders such as `[EMAIL]`; the original values are
never returned, stored in chunks or logged — only counts per type.
Checksums (IBAN mod-97, Luhn, Czech/Slovak birth-number mod-11) keep false positives down.

The recognizers run on the text as `compliance.normalise` folds it (NFKC, confusables, invisible
characters removed), so `ｊｏｅ＠ｅｘａｍｐｌｅ.ｃｏｍ` or `＋４９ ３０ …` are found like their ASCII forms;
findings carry offsets into the *original* text, and `sanitise` replaces there.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from compliance.normalise import normalise

PLACEHOLDER = {
    "EMAIL": "[EMAIL]",
    "PHONE": "[PHONE]",
    "IBAN": "[IBAN]",
    "CARD": "[CARD]",
    "NATIONAL_ID": "[NATIONAL_ID]",
    "PERSON": "[PERSON]",
    "IP_ADDRESS": "[IP_ADDRESS]",
}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
# Not the digits after a decimal point (0.05954861408025609 passes the Luhn check by chance).
_CARD = re.compile(r"(?<![.\d])\b(?:\d[ -]?){12,18}\d\b(?!\.\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s./-]?)?(?:\(\d{1,4}\)[\s./-]?)?\d{2,4}(?:[\s./-]\d{2,4}){2,4}(?![\w-])"
    r"|(?<![\w+])\+\d{1,3}[\s./-]?\d{6,12}(?!\w)"
)
_PHONE_CONTEXT = re.compile(r"\b(?:tel|phone|mobile|mob|fax|call|ph|telefon|cell)\b\.?:?\s*$", re.I)
_US_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_UK_NINO = re.compile(r"\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIOQUV])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_CZ_BIRTH = re.compile(r"\b(\d{2})(\d{2})(\d{2})/?(\d{3,4})\b")
_DE_TAXID_CTX = re.compile(
    r"\b(?:steuer-?id|tax id|ssn|social security|national id|personal id|birth number|"
    r"rodné číslo|rodne cislo|id no\.?|passport(?: no\.?)?)\s*[:#]?\s*([A-Z0-9][A-Z0-9 -]{5,18}[A-Z0-9])",
    re.I,
)
# Not part of a longer dotted number (section 4.8.1.2.3, version 1.2.3.4.5).
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\w)")
# Domains reserved for documentation and testing (RFC 2606, RFC 6761): nobody's mailbox.
_RESERVED_MAIL_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|net|org)|example|test|invalid|localhost)$", re.I)

_HONORIFIC = r"(?:Mr|Mrs|Ms|Miss|Dr|Prof|Ing|Mgr|Herr|Frau|Sir|Madam)\.?"
_NAME = r"[A-ZÀ-Ž][a-zà-ž]+(?:-[A-ZÀ-Ž][a-zà-ž]+)?"
_PERSON_HONORIFIC = re.compile(rf"\b{_HONORIFIC}\s+(?:{_NAME}\s+){{0,2}}{_NAME}\b")
_PERSON_LABEL = re.compile(
    rf"(?P<label>\b(?i:name|employee|operator|inspector|technician|contact|approved by|reviewed by|prepared by|"
    rf"author|signed|signature|supervisor|manager|owner|requested by|reported by|checked by|verified by)"
    rf"\s*[:=-]?\s+)(?P<name>{_NAME}(?:\s+{_NAME}){{1,2}})\b"
)
# Capitalised words after a label that are organisations or roles, not people.
_NOT_A_NAME = frozenset(
    """engineering maintenance quality production department team group division plant line shift manager
    management operations safety logistics purchasing procurement supervisor office service services support
    laboratory lab control assurance planning systems system it hr finance press cell unit site area""".split()
)
_PERSON_EMAIL_NAME = re.compile(rf"\b(?P<name>{_NAME}\s+{_NAME})\s*<\s*\[EMAIL\]\s*>")


@dataclass
class Finding:
    type: str
    start: int
    end: int


@dataclass
class SanitisedText:
    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _iban_ok(s: str) -> bool:
    s = s.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


# Card numbers as they are written: one run of 13-19 digits, groups of four (the last may be shorter), or
# American Express's 4-6-5; with one kind of separator.
_CARD_GROUPS = re.compile(r"\d{13,19}|\d{4}(?P<sep>[ -])\d{4}(?:(?P=sep)\d{4}){1,2}(?:(?P=sep)\d{1,4})?|"
                          r"\d{4}(?P<asep>[ -])\d{6}(?P=asep)\d{5}")


def _card_shaped(s: str) -> bool:
    """Written like a card number and issued by a card network (major industry identifier 2-6: Mastercard
    2/5, Amex/Diners/JCB 3, Visa 4, Discover/Maestro 6); not a run of one digit (0000 0000 0000 0000)."""
    digits = "".join(c for c in s if c.isdigit())
    return bool(_CARD_GROUPS.fullmatch(s)) and digits[0] in "23456" and len(set(digits)) > 1


def _luhn_ok(s: str) -> bool:
    digits = [int(c) for c in s if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _cz_birth_ok(m: re.Match[str]) -> bool:
    yy, mm, dd, tail = m.groups()
    month = int(mm) % 50 % 20
    if not (1 <= month <= 12 and 1 <= int(dd) <= 31):
        return False
    full = yy + mm + dd + tail
    if len(tail) == 4:
        return int(full) % 11 == 0 or (int(full[:9]) % 11 == 10 and full[9] == "0")
    return int(yy) < 54  # 9-digit numbers were issued before 1954


def find_pii(text: str) -> list[Finding]:
    """PII findings with offsets into `text` (detected on its normalised form, mapped back)."""
    norm = normalise(text)
    found = _find(norm.text)
    if norm.starts is None:
        return found
    out = []
    for f in found:
        start, end = norm.span(f.start, f.end)
        out.append(Finding(f.type, start, end))
    return out


_IP_CONTEXT = re.compile(r"\b(?:ip|ips|address|addr|host|server|client|gateway|dns|from|peer|remote|source)\b",
                         re.I)


def _personal_ip(addr: str, text: str, start: int, end: int) -> bool:
    """Only a globally routable address can point to a subscriber, i.e. a person. Documentation ranges
    (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), loopback, private networks, link-local, netmasks and
    multicast addresses are configuration, not personal data. A dotted quad of small numbers (every part
    below 50) is a section or version number ("4.8.1.2. Virtual environments", "novas==3.1.1.3") unless
    the words just before it say it is an address ("client IP 20.31.4.7")."""
    ip = ipaddress.IPv4Address(addr)
    if not ip.is_global or ip.is_multicast:
        return False
    octets = [int(o) for o in addr.split(".")]
    if max(octets) >= 50:
        return True
    heading = text[end:end + 2] == ". "  # "4.8.1.2. Virtual environments"
    return not heading and bool(_IP_CONTEXT.search(text[max(0, start - 24):start]))


def _find(text: str) -> list[Finding]:
    found: list[Finding] = []

    def add(kind: str, start: int, end: int) -> None:
        found.append(Finding(kind, start, end))

    for m in _EMAIL.finditer(text):
        if not _RESERVED_MAIL_DOMAIN.search(m.group().rsplit("@", 1)[1]):
            add("EMAIL", m.start(), m.end())
    for m in _IBAN.finditer(text):
        if _iban_ok(m.group()):
            add("IBAN", m.start(), m.end())
    for m in _CARD.finditer(text):
        if _card_shaped(m.group()) and _luhn_ok(m.group()):
            add("CARD", m.start(), m.end())
    for m in _US_SSN.finditer(text):
        add("NATIONAL_ID", m.start(), m.end())
    for m in _UK_NINO.finditer(text):
        add("NATIONAL_ID", m.start(), m.end())
    for m in _CZ_BIRTH.finditer(text):
        if "/" in m.group() and _cz_birth_ok(m):
            add("NATIONAL_ID", m.start(), m.end())
    for m in _DE_TAXID_CTX.finditer(text):
        add("NATIONAL_ID", m.start(1), m.end(1))
    for m in _PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        prefix = text[max(0, m.start() - 16) : m.start()]
        explicit = m.group().lstrip().startswith("+") or _PHONE_CONTEXT.search(prefix)
        # Bare digit groups are usually part numbers, dates or measurements: only an international
        # prefix or a phone label makes them a phone number.
        if 7 <= digits <= 15 and explicit:
            add("PHONE", m.start(), m.end())
    for m in _IPV4.finditer(text):
        if _personal_ip(m.group(), text, m.start(), m.end()):
            add("IP_ADDRESS", m.start(), m.end())
    for m in _PERSON_HONORIFIC.finditer(text):
        add("PERSON", m.start(), m.end())
    for m in _PERSON_LABEL.finditer(text):
        if not any(w.lower() in _NOT_A_NAME for w in m.group("name").split()):
            add("PERSON", m.start("name"), m.end("name"))
    return _non_overlapping(found)


_PRIORITY = {"EMAIL": 0, "IBAN": 1, "CARD": 2, "NATIONAL_ID": 3, "PHONE": 4, "IP_ADDRESS": 5, "PERSON": 6}


def _non_overlapping(found: list[Finding]) -> list[Finding]:
    found.sort(key=lambda f: (f.start, _PRIORITY[f.type], -(f.end - f.start)))
    out: list[Finding] = []
    for f in found:
        if out and f.start < out[-1].end:
            continue
        out.append(f)
    return out


def sanitise(text: str) -> SanitisedText:
    findings = find_pii(text)
    parts: list[str] = []
    last = 0
    counts: Counter[str] = Counter()
    for f in findings:
        if f.start < last:  # two findings inside one folded character (a ligature): replaced once
            continue
        parts.append(text[last : f.start])
        parts.append(PLACEHOLDER[f.type])
        counts[f.type] += 1
        last = f.end
    parts.append(text[last:])
    result = "".join(parts)
    # "John Smith <john@x.com>" — the name next to an address is a person even without a label.
    result, n = _PERSON_EMAIL_NAME.subn("[PERSON] <[EMAIL]>", result)
    if n:
        counts["PERSON"] += n
    return SanitisedText(result, counts)


def contains_pii(text: str) -> bool:
    return bool(find_pii(text))
