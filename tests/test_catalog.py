"""registry/ is generated from core plus the first-party plugins, and must not go stale."""

from __future__ import annotations

import json
from pathlib import Path

from masters.catalog import check_catalog, first_party_entry_points, render_catalog
from masters.plugins import get_components

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_catalogue_is_up_to_date():
    stale = check_catalog(str(ROOT))
    assert not stale, f"registry/ is stale ({', '.join(stale)}): run `masters catalog` and commit registry/"


def test_catalogue_holds_every_builtin_and_first_party_component():
    files = render_catalog(ROOT)
    listed = {(c["kind"], c["name"]) for name, text in files.items() if name.endswith(".json")
              for c in json.loads(text)["components"]}
    builtin = {(e.kind, e.name) for reg in get_components().registries.values() for e in reg}
    assert builtin <= listed
    assert len(listed) > len(builtin) or not first_party_entry_points(ROOT)


def test_catalogue_is_stable_across_renders():
    assert render_catalog(ROOT) == render_catalog(ROOT)
    assert "timestamp" not in json.dumps(render_catalog(ROOT)).lower()
