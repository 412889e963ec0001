"""The tier policy's rules (core/llm/tiers.py) on policies the integration tests do not build: gaps in the
allowed tiers, a pinned tier, a stored policy read after the platform withdrew a tier."""

from __future__ import annotations

import pytest

from core.errors import Forbidden, InvalidInput
from core.llm import tiers
from core.settings import get_settings


def _settings(offered: str | None = None):
    return get_settings().model_copy(update={"llm_tiers": offered})


def test_a_gap_in_the_allowed_tiers_is_skipped_and_nothing_runs_above_the_top():
    p = tiers.parse({"allowed": ["HEAVY", "light"]}, _settings(), ["x"])
    assert p.allowed == ("LIGHT", "HEAVY")
    assert [p.clamp(t) for t in ("LIGHT", "STANDARD", "HEAVY")] == ["LIGHT", "LIGHT", "HEAVY"]
    assert p.next_up("LIGHT") == "HEAVY" and p.next_up("HEAVY") is None
    assert p.clamp("HEAVY", ceiling="STANDARD") == "LIGHT" and p.next_up("LIGHT", ceiling="STANDARD") is None
    only_heavy = tiers.parse({"allowed": ["HEAVY"]}, _settings(), [])
    assert only_heavy.clamp("LIGHT") == "HEAVY"  # nothing allowed below: the lowest allowed tier


def test_requests_are_refused_or_downgraded_as_the_policy_says():
    refuse = tiers.parse({"allowed": ["LIGHT", "STANDARD"]}, _settings(), [])
    assert refuse.resolve("standard") == ("STANDARD", None)
    with pytest.raises(Forbidden) as e:
        refuse.resolve("HEAVY")
    assert e.value.code == "tier_not_allowed" and e.value.details["allowed"] == ["LIGHT", "STANDARD"]
    down = tiers.parse({"allowed": ["STANDARD"], "on_disallowed": "downgrade"}, _settings(), [])
    assert down.resolve("HEAVY")[0] == "STANDARD" and down.resolve("LIGHT")[0] == "STANDARD"
    with pytest.raises(InvalidInput) as e:
        down.resolve("MEGA")
    assert e.value.code == "unknown_tier"


def test_a_stored_policy_follows_what_the_platform_offers_now():
    stored = {tiers.SETTING: {"allowed": ["LIGHT", "HEAVY"], "default": "HEAVY", "specialists": {"a": "HEAVY"},
                              "on_disallowed": "downgrade"}}
    now = tiers.stored(stored, _settings("LIGHT,STANDARD"))
    assert now.allowed == ("LIGHT",) and now.default is None and dict(now.specialists) == {}
    assert tiers.stored({tiers.SETTING: {"allowed": ["HEAVY"]}}, _settings("LIGHT")).allowed == ("LIGHT",)
    assert tiers.stored({}, _settings()).as_json()["allowed"] == ["LIGHT", "STANDARD", "HEAVY"]
    with pytest.raises(InvalidInput) as e:
        tiers.parse({"allowed": ["HEAVY"]}, _settings("LIGHT"), [])
    assert e.value.code == "tier_not_offered" and e.value.details["offered"] == ["LIGHT"]


def test_the_offered_tiers_setting_refuses_unknown_names():
    from core.settings import Settings

    with pytest.raises(ValueError, match="EAP_LLM_TIERS"):
        Settings(llm_tiers="LIGHT,ULTRA")
    assert Settings(llm_tiers=" light , heavy").llm_tiers == "LIGHT,HEAVY"
