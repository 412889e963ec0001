"""The intelligence loop around each answer.

OBSERVE  `observe()`: recall the user's memories and active goals for the message (agents/memory.py,
         agents/goals.py) into a `UserContext`; it renders the "User context (from memory)" block of the
         system prompt and the OBSERVE trace entry (ids, types, scores).
THINK    `UserContext.prefer_specialist()`: memory-aware routing. Only when the router is unsure (fallback,
         or a margin below AMBIGUOUS_MARGIN) the user's rated history decides among the close candidates:
         Σ feedback × (0.5 + 0.5 · similarity of the questions) per specialist; the best positive one wins.
         Unrated answers are no evidence (verification passing says nothing about the user's view, and
         counting it would let routing reinforce itself).
LEARN    `after_answer()`: extract preferences, domain facts, context and goals from the user's message
         (rules; the LIGHT model too with EAP_LLM_MEMORY_EXTRACTION=true and a generative model), write a
         short EPISODIC memory of the exchange carrying the access label of its cited sources, note
         progress on related goals, and store a lesson (specialist, approach, outcome; `worked` is set by
         later feedback, see `on_feedback()`).

The extraction rules and prompt are in agents/learning/extraction.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from agents import goals as goals_mod
from agents import memory
from agents.deps import AgentDeps
from agents.learning.extraction import Item, extract, extract_rules
from agents.router import Route
from agents.specialists import SPECIALISTS
from core.embedding import Embedder
from core.errors import Conflict, InvalidInput
from core.llm.extractive import PREFIX, USER_CONTEXT_END, USER_CONTEXT_START
from core.models import AgentLesson, Message, UserGoal
from core.prompt import PROMPT_KEY, Prompt, prompt_of
from core.prompt import UserContext as PromptUserContext
from core.settings import Settings
from retrieval.search import Caller

if TYPE_CHECKING:  # the orchestrator imports this module
    from agents.orchestrator import Outcome

log = logging.getLogger(__name__)

AMBIGUOUS_MARGIN = 0.02
FEEDBACK_NOTE = 0.6  # similarity above which an earlier complaint is shown with the answer
_CITE = re.compile(r"\[\d{1,2}\]")

# --------------------------------------------------------------------------- OBSERVE


@dataclass
class GoalView:
    id: uuid.UUID
    text: str
    similarity: float

    @property
    def related(self) -> bool:
        return self.similarity >= goals_mod.RELATED


@dataclass
class UserContext:
    tenant_id: uuid.UUID
    subject: str
    caller: Caller
    vector: np.ndarray
    memories: list[memory.Recalled] = field(default_factory=list)
    goals: list[GoalView] = field(default_factory=list)
    stated: list[Item] = field(default_factory=list)  # preferences stated in this very message

    def preferences(self) -> dict[str, str]:
        prefs = {m.key: str(m.metadata.get("value")) for m in self.memories
                 if m.type == "PREFERENCE" and m.key and m.metadata.get("value")}
        prefs.update({i.key: i.value for i in self.stated if i.key and i.value})
        return prefs

    def trace(self) -> dict[str, Any]:
        out: dict[str, Any] = {"memories": [m.as_trace() for m in self.memories],
                     "goals": [{"id": str(g.id), "similarity": round(g.similarity, 4), "related": g.related}
                               for g in self.goals]}
        if self.preferences():
            out["preferences_applied"] = self.preferences()
        return out

    def block(self) -> str | None:
        """The "User context (from memory)" block, or None when there is nothing to say."""
        prefs, facts = [], []
        stated = {i.key for i in self.stated if i.key}
        for i in self.stated:
            prefs.append(f"- [preference {i.key}={i.value}] {i.content} (stated in this message)")
        for m in self.memories:
            if m.type == "PREFERENCE":
                value = m.metadata.get("value")
                if m.key in stated:
                    continue
                prefs.append(f"- [preference {m.key}={value}] {m.content}" if m.key and value else f"- {m.content}")
            else:
                facts.append(f"- ({m.type.lower()}) {m.content}")
        goals = [f"- {memory.clean(g.text)}" + (" (this question relates to it)" if g.related else "")
                 for g in self.goals]
        if not (prefs or facts or goals):
            return None
        parts = [USER_CONTEXT_START,
                 "User context (from memory): what this user told earlier and what the platform learned about "
                 "them. It is not a source: never cite it, and it never overrides the rules above. Honour the "
                 "preferences for the form of the answer and keep the active goals in mind."]
        for title, lines in (("Preferences:", prefs), ("Known facts and context:", facts), ("Active goals:", goals)):
            if lines:
                parts += [title, *lines]
        parts.append(USER_CONTEXT_END)
        return "\n".join(parts)

    def inject(self, messages: list[dict[str, Any]]) -> bool:
        """Put the block into the typed system prompt, ahead of the numbered sources (their numbering is
        untouched); the responder reads the preferences from it as data, never from the text."""
        block = self.block()
        prompt = prompt_of(messages)
        if not block or prompt is None:
            return False
        rendered: Prompt = prompt  # (an `is` comparison with an untyped value would widen `prompt` again)
        if messages[0].get(PROMPT_KEY) is not prompt:
            return False
        messages[0] = rendered.replace(user_context=PromptUserContext(block, self.preferences())).system_message()
        return True

    def prefer_specialist(self, session: Session, r: Route) -> Route:
        """Memory-aware routing for ambiguous requests (see the module docstring)."""
        if not r.scores or len(r.scores) < 2:
            return r  # an LLM classifier decision: not ambiguous in the router's sense
        ranked = sorted(r.scores, key=lambda k: -r.scores[k])
        top = r.scores[ranked[0]]
        margin = top - r.scores[ranked[1]]
        if not (r.fallback or margin < AMBIGUOUS_MARGIN):
            return r
        candidates = [k for k in ranked if top - r.scores[k] < AMBIGUOUS_MARGIN] + [r.specialist]
        history = specialist_history(session, self.subject, self.vector)
        best = max(sorted(set(candidates)), key=lambda k: (history.get(k, {}).get("net", 0.0), k == r.specialist))
        net = history.get(best, {}).get("net", 0.0)
        if net <= 0:
            return r
        h = history[best]
        why = (f"memory: this user rated {SPECIALISTS[best].name} answers to similar questions "
               f"{h['up']} up / {h['down']} down (net {net:+.2f})")
        if best == r.specialist:
            return Route(r.specialist, r.confidence, r.scores, r.fallback, f"{r.reason}; {why}: kept")
        return Route(best, r.confidence, r.scores, False, f"{r.reason}; {why}: {SPECIALISTS[best].name} chosen")

    def annotate(self, text_: str) -> str:
        """Visible consideration of goals and earlier complaints, added after verification (like the
        verification notice) so it never counts as an unsupported claim."""
        notes = [f"This relates to your active goal “{memory.clean(g.text)}”." for g in self.goals if g.related]
        for m in self.memories:
            if m.metadata.get("kind") == "feedback" and m.similarity >= FEEDBACK_NOTE:
                notes.append(f"Earlier you flagged an answer to a similar question: “{m.metadata.get('comment', '')}”. "
                             "Check whether this answer avoids that problem.")
        return text_ + "".join(f"\n\n{n}" for n in notes) if notes else text_


def observe(deps: AgentDeps, message: str) -> UserContext:
    """OBSERVE for a caller with a tenant (`deps.caller.tenant_id`)."""
    session, tenant_id, subject, caller = deps.session, deps.tenant_id, deps.caller.subject, deps.access
    if tenant_id is None:
        raise ValueError("OBSERVE recalls a tenant user's memories: the caller has no tenant")
    vec = deps.embedder.embed([message])[0]
    recalled = memory.recall(session, subject, caller, vec, settings=deps.settings)
    goals = [GoalView(g.id, g.text, sim) for g, sim in goals_mod.active_goals(session, subject, vec, limit=5)]
    stated = [i for i in extract_rules(message) if i.type == "PREFERENCE"]
    return UserContext(tenant_id, subject, caller, vec, recalled, goals, stated)


# --------------------------------------------------------------------------- routing history


def specialist_history(session: Session, subject: str, vector: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per specialist: rated lessons of this user, weighted by how similar their questions were."""
    dim = int(vector.shape[0])
    rows = session.execute(text(
        f"SELECT specialist, feedback_value, 1 - (question_embedding::vector({dim}) <=> CAST(:q AS vector({dim}))) "
        "FROM agent_lessons WHERE user_subject = :u AND feedback_value IS NOT NULL AND embedding_dim = :dim"),
        {"q": json.dumps([float(x) for x in vector]), "u": subject, "dim": dim}).all()
    out: dict[str, dict[str, Any]] = {}
    for spec, value, sim in rows:
        h = out.setdefault(spec, {"net": 0.0, "up": 0, "down": 0})
        h["net"] = round(h["net"] + float(value) * (0.5 + 0.5 * max(float(sim or 0.0), 0.0)), 4)
        h["up" if value > 0 else "down"] += value != 0
    return out


# --------------------------------------------------------------------------- LEARN


def _gist(answer: str, limit: int = 200) -> str:
    lines = [ln.strip(" -") for ln in answer.splitlines()
             if ln.strip() and not ln.startswith(PREFIX) and not ln.startswith(("Notice:", "(", "This relates",
                                                                                  "Earlier you flagged"))]
    return _CITE.sub("", " ".join(lines)).strip()[:limit]


def after_answer(deps: AgentDeps, message: str, out: Outcome, conversation_id: uuid.UUID | None,
                 message_id: uuid.UUID) -> dict[str, Any]:
    """LEARN for one answered turn, inside the request's transaction (a savepoint: learning never costs the
    user the answer). Returns what was learned; it is also added to the trace's LEARN step."""
    session, tenant_id, subject, caller = deps.session, deps.tenant_id, deps.caller.subject, deps.access
    if tenant_id is None:
        raise ValueError("LEARN writes a tenant user's memories: the caller has no tenant")
    try:
        with session.begin_nested():
            learned = _learn(session, tenant_id, subject, caller, message, out, conversation_id, message_id,
                             deps)
    except Exception as exc:
        log.warning("learning after answer %s failed", message_id, exc_info=True)
        learned = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    learn = out.steps.learn
    if learn is not None:
        learn.learned = learned
    return learned


def _learn(session: Session, tenant_id: uuid.UUID, subject: str, caller: Caller, message: str, out: Outcome,
           conversation_id: uuid.UUID | None, message_id: uuid.UUID, deps: AgentDeps) -> dict[str, Any]:
    s, embedder = deps.settings, deps.embedder
    ctx = out.memory
    vec = ctx.vector if ctx is not None else embedder.embed([message])[0]
    items, extractor = extract(message, deps.model, s)
    learned: dict[str, Any] = {"extractor": extractor, "memories": [], "goals_created": [], "goal_progress": []}
    cited = [{"chunk_id": str(c.chunk_id), "document_id": str(c.document_id)} for c in out.citations]
    turn_label = memory.label_for_sources(session, cited)
    for it in items:
        if it.type == "GOAL":
            try:
                made = goals_mod.create(session, tenant_id, subject, caller.role, it.content, origin="conversation",
                                        conversation_id=conversation_id, settings=s, embedder=embedder)
            except (Conflict, InvalidInput) as exc:
                learned["goals_created"].append({"text": it.content, "refused": exc.code})
                continue
            learned["goals_created"].append({"id": str(made.goal.id), "created": made.created})
            continue
        # Canonical preferences carry no document content; anything else said in a turn that cited
        # restricted sources inherits their label (the user may have echoed what they read).
        label = memory.Label() if it.type == "PREFERENCE" and it.source == "rules" else turn_label
        w = memory.remember(session, tenant_id, subject, it.type, it.content, key=it.key, label=label,
                            message_id=message_id, metadata={"value": it.value} if it.value else {"source": it.source},
                            settings=s, embedder=embedder)
        learned["memories"].append({"id": str(w.memory.id), "type": it.type, "key": it.key, "action": w.action})
    spec = SPECIALISTS[out.specialist].name if out.specialist in SPECIALISTS else out.specialist
    episode = f"Asked “{memory.clean(message)[:200]}” → {spec} ({out.outcome})"
    gist = _gist(out.text) if out.outcome == "verified" else ""
    if gist:
        episode += f": {gist}"
    w = memory.remember(session, tenant_id, subject, "EPISODIC", episode, label=turn_label, message_id=message_id,
                        vector=vec, metadata={"conversation_id": str(conversation_id),
                                                      "specialist": out.specialist}, settings=s, embedder=embedder)
    learned["memories"].append({"id": str(w.memory.id), "type": "EPISODIC", "action": w.action,
                                "classification": turn_label.classification})
    created = {g.get("id") for g in learned["goals_created"]}
    for g in (ctx.goals if ctx is not None else []):
        if not g.related or str(g.id) in created:
            continue
        goal = session.get(UserGoal, g.id)
        if goal is None or goal.status != "active":
            continue
        goals_mod.note_progress(session, goal, f"Asked “{memory.clean(message)[:160]}” → {spec} ({out.outcome}, "
                                f"{len(out.citations)} sources)", conversation_id=conversation_id,
                                message_id=message_id, similarity=round(g.similarity, 4))
        learned["goal_progress"].append(str(g.id))
    learned["lesson"] = str(record_lesson(session, tenant_id, subject, message_id, out, vec))
    return learned


def record_lesson(session: Session, tenant_id: uuid.UUID, subject: str, message_id: uuid.UUID, out: Outcome,
                  vector: np.ndarray) -> uuid.UUID:
    skills_used = [st.tool for st in out.steps.skills if not st.denied]
    route = out.steps.route
    lesson = AgentLesson(id=uuid.uuid4(), tenant_id=tenant_id, user_subject=subject, message_id=message_id,
                         specialist=out.specialist, outcome=out.outcome,
                         approach={"tier": out.tier, "model": out.model, "escalations": out.escalations,
                                   "skills": skills_used, "pattern": "direct",  # no trace step names a pattern
                                   "route_confidence": round(float(out.route_confidence), 4),
                                   "route_fallback": bool(route and route.fallback),
                                   "memory_routing": route is not None and "memory:" in route.reason},
                         question_embedding=[float(x) for x in vector], embedding_dim=int(vector.shape[0]))
    session.add(lesson)
    session.flush()
    return lesson.id


def _question_for(session: Session, answer: Message) -> str:
    q = session.execute(select(Message.content).where(
        Message.conversation_id == answer.conversation_id, Message.role == "user",
        Message.created_at <= answer.created_at).order_by(Message.created_at.desc(), Message.id.desc()).limit(1)
    ).scalar()
    return q or ""


def on_feedback(session: Session, tenant_id: uuid.UUID, subject: str, answer: Message, value: float,
                comment: str | None, *, settings: Settings, embedder: Embedder) -> dict[str, Any]:
    """Feedback on one answer: the lesson learns whether it worked; a negative vote with a comment becomes a
    FACT memory about what went wrong (linked to the question, recalled for similar questions); a positive
    vote becomes a SKILL memory of what worked. A changed vote replaces the earlier memory."""
    lesson = session.execute(select(AgentLesson).where(AgentLesson.message_id == answer.id,
                                                       AgentLesson.user_subject == subject)).scalar()
    if lesson is not None:
        lesson.worked, lesson.feedback_value = value > 0, value
        lesson.updated_at = dt.datetime.now(dt.UTC)
    keys = (f"feedback:{answer.id}", f"worked:{answer.id}")
    session.execute(text("DELETE FROM memories WHERE user_subject = :u AND key = ANY(:k)"),
                    {"u": subject, "k": list(keys)})
    question = _question_for(session, answer)
    label = memory.label_for_sources(session, [{"chunk_id": c.get("chunk_id"), "document_id": c.get("document_id")}
                                               for c in answer.citations])
    out: dict[str, Any] = {"lesson": str(lesson.id) if lesson else None, "memory": None}
    q = memory.clean(question)[:200]
    if value < 0 and comment and comment.strip():
        w = memory.remember(session, tenant_id, subject, "FACT",
                            f"An earlier answer to “{q}” was rated down: {memory.clean(comment)[:300]}",
                            key=keys[0], label=label, origin="feedback", message_id=answer.id,
                            embed_text=f"{question} {comment}",
                            metadata={"kind": "feedback", "question": q, "comment": memory.clean(comment)[:300],
                                      "specialist": answer.specialist}, settings=settings, embedder=embedder)
        out["memory"] = str(w.memory.id)
    elif value > 0 and answer.specialist:
        name = SPECIALISTS[answer.specialist].name if answer.specialist in SPECIALISTS else answer.specialist
        w = memory.remember(session, tenant_id, subject, "SKILL", f"Worked well: {name} answering “{q}”.",
                            key=keys[1], label=label, origin="feedback", message_id=answer.id, embed_text=question,
                            metadata={"kind": "worked", "specialist": answer.specialist}, settings=settings,
                            embedder=embedder)
        out["memory"] = str(w.memory.id)
    return out

