"""The fallback ranking every release carries (model_build/fallback.py): popularity over the training data,
listed in the manifest, signed with the release, and read by the client library with the manifest's sha256."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drills.client.errors import FallbackError
from drills.client.fallback import load_fallback
from model_build import data
from model_build.build import BuildResult
from model_build.fallback import FALLBACK, SOURCE, popularity_order


def test_most_clicked_first_then_impressions_then_id():
    items = np.array([7, 7, 7, 3, 3, 3, 5, 5, 9, 2])
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0])
    # 3: 2 clicks; 7 and 5: 1 click each, 7 shown more; 2 and 9: no click, shown once each (smaller id first).
    assert popularity_order(items, labels) == [3, 7, 5, 2, 9]
    assert popularity_order(np.array([], dtype=np.int64), np.array([])) == []


def test_every_release_carries_its_fallback_listed_and_signed(built: BuildResult):
    entry = {f.path: f for f in built.manifest.files}[FALLBACK]
    assert entry.role == "fallback"
    fb = load_fallback(built.out / FALLBACK, entry.sha256)
    assert (fb.model_name, fb.model_version) == (built.manifest.model["name"], built.manifest.model["version"])
    assert fb.source == SOURCE
    # The order is the training data's popularity: the top item has at least the clicks of the tenth.
    assert len(fb.order) > 100 and all(0 <= i < data.N_ITEMS for i in map(int, fb.order))
    ranked = fb.rank([fb.order[9], "unknown", fb.order[0]])
    assert ranked == [fb.order[0], fb.order[9], "unknown"]


def test_a_fallback_altered_after_the_build_is_refused(built: BuildResult, tmp_path):
    entry = {f.path: f for f in built.manifest.files}[FALLBACK]
    doc = json.loads((built.out / FALLBACK).read_text())
    doc["order"] = list(reversed(doc["order"]))
    altered = tmp_path / FALLBACK
    altered.write_text(json.dumps(doc))
    with pytest.raises(FallbackError, match="does not match the published"):
        load_fallback(altered, entry.sha256)
