"""RuntimeEndpoint: a frontend backend speaking HTTP to a running server (ours or SGLang 0.2.x's).

Requests are the native dicts (POST /generate); streams are SSE `data: {...}` lines ending with
`data: [DONE]`. The chat template comes from the server's model (GET /get_model_info) unless given.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import httpx

from sglang.runtime.chat_template import ChatTemplate, get_named, load_chat_template_from_path
from sglang.lang.backends.base import BackendError, NativeBackend
from sglang.lang.media import inline_images


class RuntimeEndpoint(NativeBackend):
    name = "http"

    def __init__(self, base_url: str, api_key: Optional[str] = None, chat_template: Optional[str] = None,
                 timeout: float = 600.0, verify: bool = True, auth_token: Optional[str] = None,
                 transport: Optional[httpx.BaseTransport] = None) -> None:
        api_key = api_key or auth_token  # SGLang 0.2.x names it auth_token
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify,
                                   transport=transport)
        self._template_name = chat_template
        self._template: ChatTemplate | None = None
        self._model_info: dict[str, Any] | None = None

    # -- transport
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach {self.base_url}{path}: {exc}") from exc
        if resp.status_code != 200:
            raise _http_error(self.base_url + path, resp.status_code, resp.text)
        return resp

    def _call(self, payload: dict[str, Any]) -> Any:
        return self._request("POST", "/generate", json=_inline(payload)).json()

    def _call_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        payload = _inline(payload)
        try:
            with self.client.stream("POST", "/generate", json={**payload, "stream": True}) as resp:
                if resp.status_code != 200:
                    raise _http_error(self.base_url + "/generate", resp.status_code, resp.read().decode())
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    obj = json.loads(data)
                    if "error" in obj and "text" not in obj:
                        raise _http_error(self.base_url + "/generate", 200, data)
                    yield obj
        except httpx.HTTPError as exc:
            raise BackendError(f"stream from {self.base_url}/generate failed: {exc}") from exc

    # -- server info
    def get_model_info(self) -> dict[str, Any]:
        if self._model_info is None:
            self._model_info = self._request("GET", "/get_model_info").json()
        return self._model_info

    def get_server_args(self) -> dict[str, Any]:
        return self._request("GET", "/get_server_args").json()

    def flush_cache(self) -> bool:
        try:
            self._request("GET", "/flush_cache")  # SGLang 0.2.x serves GET
        except BackendError:
            return False
        return True

    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            if self._template_name:
                self._template = get_named(self._template_name)
            else:
                info = self.get_model_info()
                self._template = load_chat_template_from_path(info.get("model_path"))
        return self._template

    def shutdown(self) -> None:
        self.client.close()


def _http_error(url: str, status: int, body: str) -> Exception:
    message = body
    try:
        obj = json.loads(body)
        err = obj.get("error", obj)
        message = err.get("message", body) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    if status == 400:
        return ValueError(f"{url}: bad request: {message}")
    return BackendError(f"{url} returned HTTP {status}: {message}")


def _inline(payload: dict[str, Any]) -> dict[str, Any]:
    """Local image files travel as data URLs: the server may not share this machine's files."""
    if payload.get("image_data") is None:
        return payload
    return {**payload, "image_data": inline_images(payload["image_data"])}
