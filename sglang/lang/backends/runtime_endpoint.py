"""RuntimeEndpoint: a frontend backend speaking HTTP to a running server (ours or SGLang 0.2.x's).

Requests are the native dicts (POST /generate); streams are SSE `data: {...}` lines ending with
`data: [DONE]`. The chat template is the server's own (GET /get_model_info sends it) unless given.
"""
from __future__ import annotations

import http.client
import json
from typing import Any, Iterator, Optional, Union

import httpx

from sglang.runtime.chat_template import ChatTemplate, load_chat_template, load_chat_template_from_path
from sglang.lang.backends.base import BackendError, NativeBackend
from sglang.lang.backends.http_pool import ConnectionPool, HttpStatusError, HttpxTransport

# what a request that never got an answer raises: OSError (refused, reset, timeout), a broken HTTP exchange,
# or, over an injected httpx transport, httpx's own errors
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, httpx.HTTPError)
from sglang.lang.media import inline_images


class RuntimeEndpoint(NativeBackend):
    name = "http"

    def __init__(self, base_url: str, api_key: Optional[str] = None, chat_template: Optional[str] = None,
                 timeout: float = 600.0, verify: Union[bool, str] = True, auth_token: Optional[str] = None,
                 transport: Optional[Any] = None) -> None:
        """`transport`: an `httpx.BaseTransport` to carry the requests instead of the connection pool (tests)."""
        api_key = api_key or auth_token  # SGLang 0.2.x names it auth_token
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http: Union[ConnectionPool, HttpxTransport] = (
            ConnectionPool(self.base_url, headers, timeout, verify) if transport is None else
            HttpxTransport(self.base_url, transport, headers, timeout, verify))
        self._template_name = chat_template
        self._template: ChatTemplate | None = None
        self._model_info: dict[str, Any] | None = None

    # -- transport
    def _request(self, method: str, path: str, payload: Any = None) -> bytes:
        """The body of one request's answer; transport failures and error statuses become exceptions here."""
        body = None if payload is None else json.dumps(payload).encode()
        try:
            status, data = self.http.request(method, path, body)
        except _TRANSPORT_ERRORS as exc:
            raise BackendError(f"cannot reach {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise _http_error(self.base_url + path, status, data.decode(errors="replace"))
        return data

    def _call(self, payload: dict[str, Any]) -> Any:
        return json.loads(self._request("POST", "/generate", _inline(payload)))

    def _call_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        payload = _inline(payload)
        url = self.base_url + "/generate"
        try:
            for line in self.http.stream_lines("/generate", json.dumps({**payload, "stream": True}).encode()):
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                obj = json.loads(data)
                if "error" in obj and "text" not in obj:
                    raise _http_error(url, 200, data)
                yield obj
        except HttpStatusError as exc:
            raise _http_error(url, exc.status, exc.body) from None
        except _TRANSPORT_ERRORS as exc:
            raise BackendError(f"stream from {url} failed: {type(exc).__name__}: {exc}") from exc

    # -- server info
    def get_model_info(self) -> dict[str, Any]:
        if self._model_info is None:
            self._model_info = json.loads(self._request("GET", "/get_model_info"))
        return self._model_info

    def get_server_args(self) -> dict[str, Any]:
        return json.loads(self._request("GET", "/get_server_args"))

    def flush_cache(self) -> bool:
        try:
            self._request("GET", "/flush_cache")  # SGLang 0.2.x serves GET
        except BackendError:
            return False
        return True

    def chat_template(self) -> ChatTemplate:
        """The one given (a name, .json or .jinja file), else the server's own (it sends it in /get_model_info),
        else one picked by the served model's path (a server that does not send it, e.g. SGLang 0.2.x)."""
        if self._template is None:
            if self._template_name:
                self._template = load_chat_template(None, self._template_name)
            else:
                info = self.get_model_info()
                sent = info.get("chat_template")
                self._template = ChatTemplate.from_dict(sent) if isinstance(sent, dict) else \
                    load_chat_template_from_path(info.get("model_path"))
        return self._template

    def shutdown(self) -> None:
        self.http.close()


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
