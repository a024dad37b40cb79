"""The server's OpenAPI schema and its `/docs` page, served from this process (no CDN: the page works on a
machine without network).

Routes read their JSON bodies themselves (common.parse_body: any Content-Type, our 400 shape), so
FastAPI does not see their request models; `install_openapi(app, bodies)` adds each route's pydantic
model as its requestBody, which is what /docs shows and what the fuzz tests generate requests from.
"""
from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
_REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI, bodies: dict[tuple[str, str], Any]) -> None:
    """Serve /openapi.json with a requestBody per (method, path) from `bodies`' pydantic models."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description="SGLang's native API and the OpenAI API")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for (method, path), model in bodies.items():
                op = schema.get("paths", {}).get(path, {}).get(method)
                if op is None:
                    continue
                body = model.model_json_schema(ref_template=_REF)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_json() -> dict[str, Any]:
        return app.openapi()

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.title))


def docs_page(title: str) -> str:
    """A self-contained page: it fetches /openapi.json and lists each route with its body schema."""
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__SPEC__", OPENAPI_PATH)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__ API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.5em} .op{border:1px solid #ccc;border-radius:6px;margin:.6em 0;padding:.4em .8em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;color:#fff;border-radius:4px;text-align:center;margin-right:.6em}
.get{background:#2b7bb9}.post{background:#3a9a4a}.other{background:#888}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:13px} summary{cursor:pointer}
</style></head><body>
<h1>__TITLE__ API</h1>
<p>Served by this process from <a href="__SPEC__">__SPEC__</a>. Send JSON bodies with
<code>curl -H 'Content-Type: application/json' -d '{...}' URL</code>.</p>
<div id="ops">loading __SPEC__ ...</div>
<script>
function resolve(spec, s, depth) {
  if (!s || depth > 6) return s;
  if (s.$ref) return resolve(spec, spec.components.schemas[s.$ref.split('/').pop()], depth + 1);
  if (typeof s !== 'object') return s;
  const out = Array.isArray(s) ? [] : {};
  for (const k in s) out[k] = resolve(spec, s[k], depth + 1);
  return out;
}
fetch('__SPEC__').then(r => r.json()).then(spec => {
  const root = document.getElementById('ops'); root.textContent = '';
  for (const path of Object.keys(spec.paths).sort()) {
    for (const method of Object.keys(spec.paths[path])) {
      const op = spec.paths[path][method], div = document.createElement('div');
      div.className = 'op';
      const tag = document.createElement('span');
      tag.className = 'm ' + (['get', 'post'].includes(method) ? method : 'other');
      tag.textContent = method.toUpperCase();
      const code = document.createElement('code'); code.textContent = path;
      div.append(tag, code);
      const body = op.requestBody && op.requestBody.content['application/json'];
      if (body) {
        const d = document.createElement('details'), s = document.createElement('summary'), pre = document.createElement('pre');
        s.textContent = 'request body';
        pre.textContent = JSON.stringify(resolve(spec, body.schema, 0), null, 2);
        d.append(s, pre); div.append(d);
      }
      root.append(div);
    }
  }
}).catch(e => { document.getElementById('ops').textContent = 'could not load the schema: ' + e; });
</script></body></html>
"""
