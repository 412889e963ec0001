"""The Dagster code location loads, and what it exposes matches the committed snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "dagster_definitions.json"


def _describe(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    return {
        "assets": sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),
        "asset_checks": sorted(
            f"{k.asset_key.to_user_string()}:{k.name}" for k in repo.asset_graph.asset_check_keys
        ),
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "resources": sorted(repo.get_top_level_resources()),
    }


def test_definitions_load_and_match_snapshot():
    import definitions

    dg.Definitions.validate_loadable(definitions.defs)
    current = _describe(definitions.defs)
    if os.environ.get("EAP_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "Dagster definitions changed; review and re-run with EAP_UPDATE_SNAPSHOTS=1"
    )


def test_workspace_points_at_the_composition_root():
    import yaml

    ws = yaml.safe_load((Path(__file__).resolve().parents[2] / "workspace.yaml").read_text())
    assert ws["load_from"][0]["python_module"]["module_name"] == "definitions"
