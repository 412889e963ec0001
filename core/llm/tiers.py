"""Model tiers a tenant may use: the policy a tenant admin sets (PATCH /v1/admin/settings, `model_tiers`) within
the tiers the platform offers, and the rules the orchestrator applies with it.

The platform offers the tiers of `EAP_LLM_TIERS` (comma-separated, default every tier of the ladder: LIGHT,
STANDARD, HEAVY; each runs on its `EAP_LLM_MODEL_<TIER>` or, unset, on `EAP_LLM_MODEL`). A tenant's policy,
stored in its settings under `model_tiers`:

- `allowed`: the tiers the tenant may use (a non-empty subset of the offered tiers);
- `default`: the tier an answer starts on (instead of the specialist's own default); the complexity of a
  request may still raise the start, escalation after a failed VERIFY may still climb, both within `allowed`;
- `specialists`: a default tier per specialist key (wins over `default`);
- `on_disallowed`: what a request that asks for a tier the tenant may not use gets — `refuse` (403
  `tier_not_allowed`) or `downgrade` (answered on the highest allowed tier below it, else the lowest allowed
  one; the answer's `model_tier` and its retrieval notes say so).

Without a stored policy every offered tier is allowed and nothing changes. A stored policy is re-read
against what the platform offers now (an operator may have withdrawn a tier since): tiers no longer offered
drop out, and if none is left the policy falls back to the offered tiers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.enums import TIERS
from core.errors import Forbidden, InvalidInput
from core.settings import Settings

SETTING = "model_tiers"
REFUSE, DOWNGRADE = "refuse", "downgrade"
OnDisallowed = Literal["refuse", "downgrade"]
_KEYS = {"allowed", "default", "specialists", "on_disallowed"}


def offered(settings: Settings) -> tuple[str, ...]:
    """The tiers the platform offers, in ladder order (EAP_LLM_TIERS; validated when the settings load)."""
    if not settings.llm_tiers:
        return TIERS
    wanted = {t.strip().upper() for t in settings.llm_tiers.split(",") if t.strip()}
    return tuple(t for t in TIERS if t in wanted) or TIERS


def tier_name(value: object, *, field_name: str = "tier") -> str:
    """A tier name from a request or a setting (case-insensitive) — or 422 `unknown_tier`."""
    name = value.strip().upper() if isinstance(value, str) else None
    if name not in TIERS:
        raise InvalidInput(f"unknown model tier {value!r} in {field_name}: the tiers are {', '.join(TIERS)}",
                           code="unknown_tier", details={"field": field_name, "tier": str(value)[:50],
                                                         "tiers": list(TIERS)})
    return name


@dataclass(frozen=True)
class TierPolicy:
    allowed: tuple[str, ...]  # ladder order, never empty
    default: str | None = None
    specialists: Mapping[str, str] = field(default_factory=dict)
    on_disallowed: OnDisallowed = "refuse"
    configured: bool = False  # False: no policy stored, every offered tier

    def as_json(self) -> dict[str, Any]:
        return {"allowed": list(self.allowed), "default": self.default, "specialists": dict(self.specialists),
                "on_disallowed": self.on_disallowed}

    @property
    def top(self) -> str:
        return self.allowed[-1]

    def clamp(self, tier: str, ceiling: str | None = None) -> str:
        """The allowed tier a wanted tier runs on: itself, else the highest allowed below it, else the lowest
        allowed; never above `ceiling` (itself allowed)."""
        wanted = TIERS.index(tier)
        if ceiling is not None:
            wanted = min(wanted, TIERS.index(ceiling))
        below = [t for t in self.allowed if TIERS.index(t) <= wanted]
        return below[-1] if below else self.allowed[0]

    def next_up(self, tier: str, ceiling: str | None = None) -> str | None:
        """The next allowed tier above `tier` (an escalation), or None at the top (or at `ceiling`)."""
        limit = TIERS.index(ceiling) if ceiling is not None else len(TIERS) - 1
        return next((t for t in self.allowed if TIERS.index(tier) < TIERS.index(t) <= limit), None)

    def base(self, specialist: str, specialist_tier: str) -> str:
        """The tier a specialist's answer starts from before complexity raises it."""
        return self.specialists.get(specialist) or self.default or specialist_tier

    def resolve(self, requested: str) -> tuple[str, str | None]:
        """(the tier a request that asks for `requested` runs on, a note when it is not the one asked for).
        Refused with 403 `tier_not_allowed` when the policy says so."""
        tier = tier_name(requested)
        if tier in self.allowed:
            return tier, None
        if self.on_disallowed == REFUSE:
            raise Forbidden(f"the model tier {tier} is not available to this tenant; allowed: "
                            f"{', '.join(self.allowed)}", code="tier_not_allowed",
                            details={"requested": tier, "allowed": list(self.allowed)})
        used = self.clamp(tier)
        return used, (f"The model tier {tier} is not available to this tenant; this answer was written on "
                      f"the {used} tier.")


def model_of(tier: str, settings: Settings) -> str:
    """The model a tier runs on: EAP_LLM_MODEL_<TIER>, else EAP_LLM_MODEL, else the extractive responder."""
    from core.llm.extractive import MODEL as EXTRACTIVE_MODEL

    per_tier = {"LIGHT": settings.llm_model_light, "STANDARD": settings.llm_model_standard,
                "HEAVY": settings.llm_model_heavy}
    return per_tier.get(tier) or settings.llm_model or EXTRACTIVE_MODEL


def everything(settings: Settings) -> TierPolicy:
    return TierPolicy(allowed=offered(settings))


def parse(raw: object, settings: Settings, specialists: Iterable[str]) -> TierPolicy:
    """Validate a policy a tenant admin sends against the offered tiers and the specialists (422 with a
    machine-readable code: invalid_tier_policy, unknown_tier, tier_not_offered, unknown_specialist)."""
    if not isinstance(raw, dict):
        raise InvalidInput("model_tiers must be an object", code="invalid_tier_policy")
    extra = sorted(set(raw) - _KEYS)
    if extra:
        raise InvalidInput(f"unknown field(s) in model_tiers: {', '.join(map(repr, extra))}",
                           code="invalid_tier_policy", details={"fields": extra, "allowed_fields": sorted(_KEYS)})
    platform = offered(settings)
    raw_allowed = raw.get("allowed", list(platform))
    if not isinstance(raw_allowed, list) or not raw_allowed or len(raw_allowed) > len(TIERS) * 2:
        raise InvalidInput("model_tiers.allowed must be a non-empty list of tiers", code="invalid_tier_policy")
    allowed = {tier_name(t, field_name="model_tiers.allowed") for t in raw_allowed}
    not_offered = [t for t in TIERS if t in allowed and t not in platform]
    if not_offered:
        raise InvalidInput(f"the platform does not offer the tier(s) {', '.join(not_offered)}; it offers "
                           f"{', '.join(platform)}", code="tier_not_offered",
                           details={"tiers": not_offered, "offered": list(platform)})
    ordered = tuple(t for t in TIERS if t in allowed)

    def within(value: object, where: str) -> str:
        tier = tier_name(value, field_name=where)
        if tier not in ordered:
            raise InvalidInput(f"{where} is {tier}, which is not among the allowed tiers {', '.join(ordered)}",
                               code="tier_not_allowed", details={"field": where, "tier": tier,
                                                                 "allowed": list(ordered)})
        return tier

    default = None if raw.get("default") is None else within(raw["default"], "model_tiers.default")
    raw_specs = raw.get("specialists") or {}
    if not isinstance(raw_specs, dict):
        raise InvalidInput("model_tiers.specialists must map specialist keys to tiers", code="invalid_tier_policy")
    known = set(specialists)
    unknown = sorted(str(k)[:100] for k in raw_specs if k not in known)
    if unknown:
        raise InvalidInput(f"no specialist named {', '.join(map(repr, unknown))}", code="unknown_specialist",
                           details={"specialists": unknown, "known": sorted(known)})
    specs = {k: within(v, f"model_tiers.specialists.{k}") for k, v in sorted(raw_specs.items())}
    on = raw.get("on_disallowed", REFUSE)
    if on == REFUSE:
        return TierPolicy(ordered, default, specs, "refuse", configured=True)
    if on == DOWNGRADE:
        return TierPolicy(ordered, default, specs, "downgrade", configured=True)
    raise InvalidInput(f"model_tiers.on_disallowed must be {REFUSE!r} or {DOWNGRADE!r}",
                       code="invalid_tier_policy", details={"field": "model_tiers.on_disallowed"})


def stored(tenant_settings: Mapping[str, Any], settings: Settings) -> TierPolicy:
    """The tenant's policy as it applies now (see the module docstring), from its settings JSON."""
    raw = tenant_settings.get(SETTING)
    if not isinstance(raw, dict):
        return everything(settings)
    platform = offered(settings)
    allowed = tuple(t for t in TIERS if t in (raw.get("allowed") or ()) and t in platform)
    if not allowed:
        return everything(settings)

    def keep(t: object) -> str | None:
        return t if isinstance(t, str) and t in allowed else None

    specs = {str(k): v for k, v in (raw.get("specialists") or {}).items() if keep(v)}
    on: OnDisallowed = "downgrade" if raw.get("on_disallowed") == DOWNGRADE else "refuse"
    return TierPolicy(allowed, keep(raw.get("default")), specs, on, configured=True)
