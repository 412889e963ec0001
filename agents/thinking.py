"""Thinking tools in the main flow (roadmap 12B): Council, RedTeam, FirstPrinciples — and the
statement-level reading of an answer that they and the composition patterns share.

Every tool works without a generative model and is deterministic: perspectives come from different
specialists' retrieval and prompts, evidence is quoted from retrieved chunks, and every synthesised
line cites the chunk it comes from. A configured model only replaces the extractive synthesis
(through the same LiteLLM seam, in `agents/compose`); the checks here stay rule-based, so a
model cannot talk its way past them.

- Council: several specialists' positions → common ground (a chunk cited by several of them) and
  the strongest consideration of each; for decisions ("should we…", "which option…").
- RedTeam: attacks a draft statement by statement — unsupported claims (no or invalid citation,
  numbers or words the cited source does not contain, assurances like "it is safe" that no source
  makes), safety (hazardous actions not backed by a procedure) and compliance (personal data,
  export-controlled terms) — and removes or marks what fails; for quality-critical answers.
- FirstPrinciples: decomposes a "why" question into cause hypotheses along the 6M (Ishikawa)
  categories, probes the documents once per hypothesis and keeps only hypotheses backed by a
  retrieved passage.

Why one module of ~440 lines: the three tools and the composition all read answers through the same
statement parser (`statements`, `rewrite`, the [n] markers, the causal and controlling-document
patterns); keeping them with it means a change to what counts as a statement changes every reader at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compliance.normalise import fold
from compliance.pii import contains_pii, sanitise
from core.llm.extractive import NO_ANSWER, PREFIX
from core.text import tokenize

COUNCIL, REDTEAM, FIRST_PRINCIPLES = "Council", "RedTeam", "FirstPrinciples"
MARK = re.compile(r"\[(\d{1,3})\]")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.])")  # the same number shape VERIFY checks
_SENTENCE_END = re.compile(r"(?<=[A-Za-z0-9)\]%][.!?])\s+(?=[A-Z\"'(])")
# "… damaged. [1] Replace …": a citation after a sentence's full stop ends that sentence.
_AFTER_MARK = re.compile(r"(?<=[.!?]\s\[\d\])\s+(?=[A-Z])|(?<=[.!?]\s\[\d\d\])\s+(?=[A-Z])")
_BULLET = re.compile(r"^(\s*(?:[-•*]|\d{1,2}[.)])\s+)")
# Notices, headings and table rows are structure, not statements to be cited.
_STRUCTURAL_START = ("#", "|", "**", "_", "---", "Notice:", "Quality gate", "Reasoning:")
# Documents that govern a safety, compliance or release decision (titles of SOPs, inspection
# criteria, quality reports, policies); a maintenance manual informs such a decision, it does not rule it.
CONTROLLING = re.compile(r"(?:^|\b)(?:sop|procedure|instruction|criteria|inspection|specification|policy|standard|"
                         r"quality|qr|ic)(?:\b|-)", re.I)
_HAZARD = re.compile(r"\b(?:bypass\w*|overrid\w+|disabl\w+|defeat\w*|skip\w*|reach\w* into|jumper\w*|"
                     r"remov\w+ (?:the |your |a )?(?:guard|lock|padlock|tag|safety block)|"
                     r"without (?:a |the )?(?:lockout|lock|tag|permit|ppe|gloves|safety)|while (?:it is |the \w+ is )?"
                     r"running|under pressure|energi[sz]ed)\b", re.I)
_ASSURANCE = re.compile(r"\b(?:it is safe|is safe|safe to|no risk|not dangerous|can be released|may be released|"
                        r"can be shipped|is approved|are approved|approve it|is compliant|go ahead|yes)\b", re.I)
_EXPORT = re.compile(r"\b(?:ITAR|EAR99|ECCN|dual[\s-]use|export[\s-]control(?:led)?)\b", re.I)
CAUSAL = re.compile(r"\b(?:caus\w*|due to|because|led to|lead to|let|resulted in|root cause|cracked|worn|broken|"
                     r"blocked|clogged|contaminated|against the specified)\b|"
                     r"\b(?:if|when|above|below|exceeds?)\b[^.]*\b(?:stops?|trips?|triggers?|shuts? down)\b", re.I)


# ------------------------------------------------------------------------------------ statements


@dataclass
class Statement:
    line: int  # index into text.splitlines()
    text: str  # the sentence as written, markers included
    markers: list[int]

    @property
    def plain(self) -> str:
        return " ".join(MARK.sub("", self.text).split()).strip(" -•*")


def is_structural(line: str) -> bool:
    """Notices, headings, table rows: lines the platform writes, and it never puts a citation into them.
    A line carrying an [n] marker is content, whatever it starts with: a quoted document sentence that
    begins "Notice: …" or "Quality gate: …" is still checked, cited and attacked like any statement."""
    s = line.strip()
    if s and MARK.search(s) and s != PREFIX:
        return False
    return (not s or s == PREFIX or s.startswith(_STRUCTURAL_START) or s.startswith(NO_ANSWER[:40])
            or s.endswith(":"))


def _split_line(line: str) -> tuple[str, list[str]]:
    m = _BULLET.match(line)
    bullet = m.group(1) if m else ""
    body = line[len(bullet):].strip()
    return bullet, [s for part in _AFTER_MARK.split(body) for s in _SENTENCE_END.split(part) if s.strip()]


def _line_statements(i: int, sents: list[str]) -> list[Statement | None]:
    """A sentence without a marker of its own is covered by the next marker on the same line (one
    cited step or bullet may hold several sentences); None for fragments too short to be a statement."""
    own = [[int(m) for m in MARK.findall(s)] for s in sents]
    out: list[Statement | None] = []
    for j, sent in enumerate(sents):
        if sum(c.isalpha() for c in MARK.sub("", sent)) < 4:
            out.append(None)
            continue
        markers = own[j] or next((m for m in own[j + 1:] if m), [])
        out.append(Statement(i, sent.strip(), markers))
    return out


def statements(text: str) -> list[Statement]:
    """The answer's statements: sentences of its non-structural lines, with the [n] markers that cover them."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not is_structural(line):
            out += [st for st in _line_statements(i, _split_line(line)[1]) if st is not None]
    return out


def rewrite(text: str, decide: Callable[[Statement], str | None]) -> str:
    """Rebuild `text` with each statement replaced by decide(statement) (None drops it); a bullet
    whose statements are all dropped disappears; structure lines stay as they are."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if is_structural(line):
            out.append(line)
            continue
        bullet, sents = _split_line(line)
        decided = [(sent, st, decide(st) if st is not None else sent)
                   for sent, st in zip(sents, _line_statements(i, sents), strict=True)]
        kept = []
        for j, (_sent, st, new) in enumerate(decided):
            if new is None:
                continue
            if st is not None and st.markers and not MARK.search(new):
                # Covered by a later sentence's marker: keep the cover if that sentence is gone.
                later = [n for _s, st2, n in decided[j + 1:] if st2 is not None and n is not None]
                if not (later and MARK.search(later[0])):
                    new = new.rstrip() + " " + " ".join(f"[{n}]" for n in st.markers)
            kept.append(new)
        if any(sum(c.isalpha() for c in MARK.sub("", s)) >= 4 for s in kept):
            out.append(bullet + " ".join(kept))
    return _tidy("\n".join(out))


def _tidy(text: str) -> str:
    """Drop headings left without content under them and collapse blank runs."""
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        s = line.strip()
        heading = s.endswith(":") and not MARK.search(s) and s != PREFIX or s.startswith("**")
        if heading:
            nxt = next((ln.strip() for ln in lines[i + 1:] if ln.strip()), "")
            if not nxt or (nxt.endswith(":") and not MARK.search(nxt)) or nxt.startswith("**"):
                continue
        if not s and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out).strip()


def content_terms(text: str) -> set[str]:
    return set(tokenize(MARK.sub("", text)))


def support(statement: Statement, sources: Sequence[str]) -> float:
    """Share of the statement's content terms found in the given source texts."""
    terms = content_terms(statement.plain)
    if not terms:
        return 1.0
    have = set().union(*(content_terms(s) for s in sources)) if sources else set()
    return len(terms & have) / len(terms)


def source_texts(markers: Sequence[int], hit_texts: Sequence[str], tool_texts: Sequence[str]) -> list[str]:
    """The texts behind [n] markers (hits first, tool results after them); invalid markers give nothing."""
    allt = list(hit_texts) + list(tool_texts)
    return [allt[n - 1] for n in markers if 1 <= n <= len(allt)]


# ------------------------------------------------------------------------------------ RedTeam


@dataclass
class Attack:
    text: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # unresolved: the quality gate must not pass

    def reasoning(self) -> dict[str, Any]:
        removed = sum(1 for f in self.findings if f["action"] == "removed")
        marked = sum(1 for f in self.findings if f["action"] == "marked")
        summary = (f"RedTeam checked every statement for unsupported claims, safety and compliance: "
                   f"{len(self.findings)} finding(s), {removed} removed, {marked} marked."
                   if self.findings else "RedTeam checked every statement for unsupported claims, safety and "
                                         "compliance: no finding.")
        return {"tool": REDTEAM, "summary": summary, "findings": self.findings,
                "checks": ["unsupported: no or invalid citation, numbers or words the cited source lacks, "
                           "assurances no source makes",
                           "safety: hazardous actions must be backed by a procedure document",
                           "compliance: no personal data, no export-controlled terms"]}


SAFETY_MARK = "(safety-relevant: not backed by a procedure; follow the applicable SOP)"


def red_team(text: str, hit_texts: Sequence[str], hit_titles: Sequence[str], tool_texts: Sequence[str],
             min_support: float = 0.6) -> Attack:
    """Attack a draft: unsupported statements are removed, safety-relevant ones without a procedure
    behind them are marked (removed when also unsupported), personal data is masked and
    export-controlled statements are removed."""
    findings: list[dict[str, Any]] = []
    n_hits = len(hit_texts)

    def decide(st: Statement) -> str | None:
        plain = st.plain
        cited = source_texts(st.markers, hit_texts, tool_texts)
        # Tool results (an SOP's full step list, a calculation) are sources too: a statement they back is backed.
        backing = cited + list(tool_texts)
        problems = []
        if not st.markers:
            problems.append("no citation")
        elif len(cited) < len(st.markers):
            problems.append("cites a source that was not retrieved")
        else:
            joined = " ".join(backing)
            missing = [n for n in NUMBER.findall(plain) if n not in joined]
            if missing:
                problems.append(f"numbers not in the cited source: {missing[:3]}")
            sup = support(st, backing)
            if sup < min_support:
                problems.append(f"only {sup:.0%} of its terms appear in the cited source")
            for m in _ASSURANCE.finditer(plain):
                if not re.search(re.escape(m.group(0)), joined, re.I):
                    problems.append(f"assurance '{m.group(0)}' that no cited source makes")
                    break
        hazard = _HAZARD.search(fold(plain))
        by_procedure = any(1 <= n <= n_hits and CONTROLLING.search(hit_titles[n - 1] or "") for n in st.markers)
        if problems:
            findings.append({"statement": plain[:240], "attack": "unsupported", "problem": "; ".join(problems),
                             "action": "removed"})
            if hazard:
                findings.append({"statement": plain[:240], "attack": "safety",
                                 "problem": f"hazardous action '{hazard.group(0)}' in an unsupported statement",
                                 "action": "removed"})
            return None
        if _EXPORT.search(fold(plain)):  # folded like the classifier's detectors (full-width, look-alikes)
            findings.append({"statement": plain[:240], "attack": "compliance",
                             "problem": "export-controlled term", "action": "removed"})
            return None
        out = st.text
        if contains_pii(out):
            out = sanitise(out).text
            findings.append({"statement": plain[:240], "attack": "compliance", "problem": "personal data",
                             "action": "marked"})
        if hazard and not by_procedure:
            findings.append({"statement": plain[:240], "attack": "safety",
                             "problem": f"hazardous action '{hazard.group(0)}' not backed by a procedure document",
                             "action": "marked"})
            out = f"{out} {SAFETY_MARK}"
        return out

    revised = rewrite(text, decide)
    blocking = [f"{f['attack']}: {f['problem']}" for f in findings
                if f["attack"] == "safety" and f["action"] == "marked"]
    return Attack(revised, findings, blocking)


# ------------------------------------------------------------------------------------ Council


@dataclass
class Perspective:
    specialist: str
    name: str
    question: str
    text: str  # the specialist's answer, citations already in the merged numbering
    sources: list[str] = field(default_factory=list)  # titles of the documents it cited


AGREE = 0.6  # cosine between two perspectives' statements above which they say the same thing
CONSIDER = 0.25  # cosine to the question a perspective's further statement needs to be listed


def council(question: str, perspectives: list[Perspective], embed: Callable[[list[str]], np.ndarray],
            prefix: str | None = None) -> tuple[str, dict[str, Any]]:
    """Extractive synthesis: common ground is what two or more perspectives state alike (the same
    cited chunk, or statements whose embeddings agree); each perspective then contributes its
    strongest statement not yet covered; perspectives that found nothing are named. Returns
    (answer text, reasoning)."""
    per = [(p, [st for st in statements(p.text) if st.markers and not is_title(st)]) for p in perspectives]
    flat = [(pi, st) for pi, (_p, sts) in enumerate(per) for st in sts]
    allv = embed([question] + [st.plain for _, st in flat])
    q, vecs = allv[0], allv[1:]
    covered: set[int] = set()
    common = []
    for a, (pa, sa) in enumerate(flat):
        if a in covered:
            continue
        group = [a] + [b for b, (pb, sb) in enumerate(flat) if b != a and pb != pa and b not in covered
                       and (set(sa.markers) & set(sb.markers) or float(vecs[a] @ vecs[b]) >= AGREE)]
        if len({flat[g][0] for g in group}) >= 2:
            covered.update(group)
            reps: dict[int, Statement] = {}
            for g in group:
                reps.setdefault(flat[g][0], flat[g][1])
            common.append([(perspectives[pi], st) for pi, st in sorted(reps.items())])
    considerations = []
    for pi, (p, _sts) in enumerate(per):
        idx = [i for i, (pj, _st) in enumerate(flat) if pj == pi and i not in covered]
        on_topic = [i for i in idx if float(vecs[i] @ q) >= CONSIDER] or idx[:1]
        for i in on_topic[:2]:
            considerations.append((p, flat[i][1]))
    silent = [p.name for p, sts in per if not sts]
    names = [p.name for p in perspectives]
    lines = [prefix] if prefix else []
    lines.append(f"_Council synthesis of the {_join(names)} perspectives: the documents inform this decision, "
                 "they do not make it._")
    for agreed in common[:4]:
        who = _join([p.name for p, _st in agreed])
        lines.append(f"- {who}: " + " ".join(st.text for _p, st in agreed[:2]))
    if considerations:
        lines.append("Considerations per perspective:")
        lines += [f"- {p.name}: {st.text}" for p, st in considerations]
    if silent:
        lines.append(f"_Nothing on this in the documents of the {_join(silent)}._")
    if common:
        lines.insert(2 if prefix else 1, "Common ground:")
    reasoning = {
        "tool": COUNCIL,
        "summary": f"{len(perspectives)} perspectives ({_join(names)}) answered independently from their own "
                   f"retrieval; {len(common)} point(s) of common ground, {len(considerations)} consideration(s)"
                   + (f"; nothing found by {_join(silent)}." if silent else "."),
        "perspectives": [_pview(p, sts) for p, sts in per],
        "common_ground": [{"shared_by": [p.specialist for p, _st in g], "statements": [st.text for _p, st in g]}
                          for g in common],
        "considerations": [{"specialist": p.specialist, "statement": st.text} for p, st in considerations],
        "method": "extractive synthesis: agreement = the same chunk cited, or statements whose embeddings agree "
                  f"(cosine >= {AGREE})",
    }
    if not common and not considerations:
        return NO_ANSWER, reasoning
    return "\n".join(lines), reasoning


def _pview(p: Perspective, sts: list[Statement]) -> dict[str, Any]:
    return {"specialist": p.specialist, "name": p.name, "question": p.question,
            "position": [st.text for st in sts], "sources": p.sources}


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ------------------------------------------------------------------------------------ FirstPrinciples

# (key, label, the hypothesis in words, probe terms): the 6M cause categories of an Ishikawa analysis.
CAUSE_CATEGORIES: tuple[tuple[str, str, str, str], ...] = (
    ("machine", "Machine", "a machine or equipment fault",
     "machine equipment hose valve pump seal cooler fan filter nozzle tip cracked worn leak failure"),
    ("material", "Material", "a material or consumable problem",
     "material consumable wire gas cylinder oil grease supply batch lot"),
    ("method", "Method", "a gap in the method or process",
     "method procedure process checklist check schedule setting parameter step"),
    ("measurement", "Measurement", "an out-of-specification measured value",
     "measured measurement flow pressure temperature gauge indicator specified rate limit"),
    ("people", "People", "a human or training factor",
     "operator training handling error shift supervisor qualification"),
    ("environment", "Environment", "an environmental condition",
     "environment ambient air humidity contamination dust temperature"),
)
EVIDENCE_MIN_SIMILARITY = 0.35  # cosine(question, evidence) that makes a passage from another document on topic


def hypotheses() -> list[tuple[str, str, str, str]]:
    return list(CAUSE_CATEGORIES)


def passage_sentences(text: str) -> list[str]:
    """A retrieved chunk's sentences (lines and sentence ends), bullets stripped, fragments dropped."""
    out = []
    for line in text.splitlines():
        body = _BULLET.sub("", line).strip()
        for sent in _SENTENCE_END.split(body):
            sent = sent.strip()
            if len(sent.split()) >= 4:
                out.append(sent)
    return out


def is_title(st: Statement) -> bool:
    plain = st.plain
    return not re.search(r"[.!?:)]$", plain) and len(plain.split()) <= 7 and "|" not in plain


def first_principles(question: str, candidates: list[tuple[str, Statement]], embed: Callable[[list[str]], np.ndarray],
                     on_topic: Callable[[Statement], bool]) -> dict[str, Any]:
    """Assess cause hypotheses. `candidates` are (category key, cited statement) pairs from the
    probes. A hypothesis is supported by a statement that is on topic (from a document the answer
    already relies on, or close to the question), names that category and states a cause; a
    statement that matches but states no cause is only related evidence. One statement backs one
    hypothesis (the one it matches best)."""
    cats = {k: (label, hyp, terms) for k, label, hyp, terms in CAUSE_CATEGORIES}
    cands = [(k, st) for k, st in candidates if st.markers and not is_title(st)]
    sims = {}
    if cands:
        vecs = embed([question] + [st.plain for _, st in cands])
        sims = {i: float(vecs[i + 1] @ vecs[0]) for i in range(len(cands))}
    scored = []
    for i, (key, st) in enumerate(cands):
        overlap = len(content_terms(st.plain) & content_terms(cats[key][2]))
        if overlap and (on_topic(st) or sims[i] >= EVIDENCE_MIN_SIMILARITY):
            causal = bool(CAUSAL.search(st.plain))
            scored.append((overlap + (2 if causal else 0) + sims[i], key, st, causal, sims[i]))
    scored.sort(key=lambda x: -x[0])
    chosen: dict[str, tuple[Statement, bool, float]] = {}
    used: set[str] = set()
    for _score, key, st, causal, sim in scored:
        if key in chosen or st.plain in used:
            continue
        chosen[key] = (st, causal, sim)
        used.add(st.plain)
    rows = []
    for key, label, hyp, _terms in CAUSE_CATEGORIES:
        if key in chosen:
            st, causal, sim = chosen[key]
            rows.append({"category": label, "hypothesis": hyp,
                         "status": "supported" if causal else "related evidence, no cause stated",
                         "evidence": st.text, "similarity": round(sim, 3)})
        else:
            rows.append({"category": label, "hypothesis": hyp, "status": "no evidence in your documents"})
    supported = [str(r["category"]) for r in rows if r["status"] == "supported"]
    return {
        "tool": FIRST_PRINCIPLES,
        "summary": (f"Decomposed into {len(rows)} cause hypotheses (6M: machine, material, method, measurement, "
                    f"people, environment); "
                    + (f"backed by evidence that states a cause: {_join(supported)}." if supported
                       else "none is backed by evidence that states a cause.")),
        "hypotheses": rows,
        "method": "one retrieval probe per cause category; a hypothesis is supported only by a cited passage that is "
                  "on topic for the question, names the category and states a cause",
    }


def render_hypotheses(reasoning: dict[str, Any]) -> list[str]:
    """The answer's root-cause section: the supported hypotheses with their cited evidence."""
    return [f"- {r['category']}: {r['evidence']}" for r in reasoning.get("hypotheses", [])
            if r["status"] == "supported"]
