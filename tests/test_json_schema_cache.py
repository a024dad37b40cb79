"""Compiled grammars on disk (cfg_cache.py): a JSON schema's grammar is compiled once, then loaded by key
with the same language; a torn file is ignored and rewritten."""
from __future__ import annotations

import json

import pytest

from sglang.runtime.constrained.cfg import matches
from sglang.runtime.constrained.cfg_cache import cached_cfg, cfg_path
from sglang.runtime.constrained.json_schema import json_schema_info, schema_cfg

TREE = {"$defs": {"n": {"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                                                           "k": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
                        "required": ["v"]}}, "$ref": "#/$defs/n"}
TEXTS = ['{"v": 1}', '{"v": 1, "k": [{"v": 2, "k": []}]}', '{"v": 10}', '{"k": []}', '{"v": 1, "k": [{}]}']


def _never(src: str):
    raise AssertionError("compiled again instead of loading from disk")


def test_grammar_round_trips_through_the_disk_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CACHE_DIR", str(tmp_path))
    key = json_schema_info(TREE)["grammar"]
    first = cached_cfg(key, schema_cfg)
    assert cfg_path(key).exists()
    again = cached_cfg(key, _never)
    assert [matches(again, t.encode()) for t in TEXTS] == [matches(first, t.encode()) for t in TEXTS]
    assert [matches(again, t.encode())[1] for t in TEXTS] == [True, True, False, False, False]


def test_torn_file_is_rewritten(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CACHE_DIR", str(tmp_path))
    key = json_schema_info(TREE)["grammar"]
    path = cfg_path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 torn")
    g = cached_cfg(key, schema_cfg)
    assert matches(g, TEXTS[1].encode())[1]
    assert matches(cached_cfg(key, _never), TEXTS[1].encode())[1]
    with pytest.raises(AssertionError):
        cached_cfg(json_schema_info({**TREE, "title": "other"})["grammar"], _never)  # another key: not cached


def test_converter_version_is_part_of_the_key() -> None:
    key = json_schema_info(TREE)["grammar"]
    assert json.loads(key.split(" ", 1)[1])["converter"] >= 1
