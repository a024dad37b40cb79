"""Chat templates: the model's own jinja template plus named fallbacks with per-role begin/end strings.

Two users: the frontend interpreter appends `role_begin(role)` / `role_end(role)` around each role
block (`with s.user(): ...`), and the OpenAI server renders a message list with `render(messages)`
(the jinja template when the model has one, else the role strings). Role strings for a jinja
template come from the named template that renders a probe conversation identically; when none
matches we fall back to "default" role strings (render still uses the jinja, so /v1/chat is exact).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    roles: dict[str, tuple[str, str]]  # role -> (begin, end)
    default_system_prompt: Optional[str] = None
    stop_strs: tuple[str, ...] = ()
    jinja: Optional[str] = field(default=None, repr=False)  # the model's template source, if any
    bos_token: str = ""
    eos_token: str = ""
    image_token: str = "<image>"

    def to_dict(self) -> dict[str, Any]:
        """The template as plain JSON data: what a server tells its HTTP clients (GET /get_model_info)."""
        d = dataclasses.asdict(self)
        d["roles"] = {r: list(be) for r, be in self.roles.items()}
        d["stop_strs"] = list(self.stop_strs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChatTemplate":
        """The inverse of `to_dict`; unknown keys (a newer server's) are ignored, missing roles are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        roles = kw.get("roles")
        if not isinstance(roles, dict) or not all(r in roles for r in ROLES):
            raise ValueError(f"chat template {d.get('name')!r}: roles must give begin/end strings of "
                             f"{', '.join(ROLES)}, got {roles!r}")
        kw["roles"] = {r: (str(be[0]), str(be[1])) for r, be in roles.items()}
        kw["stop_strs"] = tuple(kw.get("stop_strs") or ())
        return cls(**kw)

    def role_begin(self, role: str) -> str:
        return self._role(role)[0]

    def role_end(self, role: str) -> str:
        return self._role(role)[1]

    def _role(self, role: str) -> tuple[str, str]:
        if role not in self.roles:
            raise ValueError(f"chat template {self.name!r} has no role {role!r} (roles: {', '.join(self.roles)})")
        return self.roles[role]

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt for an OpenAI-style message list."""
        msgs = [_normalize_message(m, i) for i, m in enumerate(messages)]
        if self.jinja is not None:
            return _render_jinja(self.jinja, msgs, add_generation_prompt, self.bos_token, self.eos_token)
        return self.render_roles(msgs, add_generation_prompt)

    apply = render

    def render_roles(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        out = []
        if self.default_system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            out.append(self.role_begin("system") + self.default_system_prompt + self.role_end("system"))
        for m in messages:
            out.append(self.role_begin(m["role"]) + m["content"] + self.role_end(m["role"]))
        if add_generation_prompt:
            out.append(self.role_begin("assistant"))
        return "".join(out)


def _normalize_message(m: Any, i: int) -> dict[str, str]:
    if not isinstance(m, dict) or "role" not in m:
        raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
    role, content = m["role"], m.get("content")
    if role not in ROLES:
        raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if content is None:
        content = ""
    elif isinstance(content, list):  # OpenAI content parts: keep the text parts
        parts = []
        for j, p in enumerate(content):
            if not isinstance(p, dict) or p.get("type") != "text":
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise ValueError(f"messages[{i}].content[{j}] has type {kind!r}; only text parts are supported")
            parts.append(str(p.get("text", "")))
        content = "".join(parts)
    elif not isinstance(content, str):
        raise ValueError(f"messages[{i}].content must be a string or a list of parts")
    return {"role": role, "content": content}


def _render_jinja(source: str, messages: list[dict[str, str]], add_generation_prompt: bool, bos: str,
                  eos: str) -> str:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str) -> None:
        raise ValueError(f"chat template: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        tmpl = env.from_string(source)
        return tmpl.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos,
                           eos_token=eos, raise_exception=raise_exception)
    except TemplateError as exc:
        raise ValueError(f"chat template failed to render: {exc}") from exc


# ---------------------------------------------------------------- named templates
def _same(begin_fmt: str, end: str) -> dict[str, tuple[str, str]]:
    return {r: (begin_fmt.format(role=r), end) for r in ROLES}


NAMED: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("default", {"system": ("SYSTEM:", "\n"), "user": ("USER:", "\n"),
                                 "assistant": ("ASSISTANT:", "\n")}),
        ChatTemplate("chatml", _same("<|im_start|>{role}\n", "<|im_end|>\n"), stop_strs=("<|im_end|>",)),
        ChatTemplate("llama-3", _same("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>"),
                     stop_strs=("<|eot_id|>",)),
        ChatTemplate("vicuna", {"system": ("", " "), "user": ("USER: ", " "), "assistant": ("ASSISTANT: ", "</s>")},
                     default_system_prompt="A chat between a curious user and an artificial intelligence "
                     "assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
                     stop_strs=("</s>",)),
        ChatTemplate("llama-2", {"system": ("<<SYS>>\n", "\n<</SYS>>\n\n"), "user": ("[INST] ", " [/INST] "),
                                 "assistant": ("", " </s><s>")}, stop_strs=("</s>",)),
        ChatTemplate("gemma", {"system": ("", ""), "user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
                               "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n")},
                     stop_strs=("<end_of_turn>",)),
    )
}
ALIASES = {"llama-3-instruct": "llama-3", "vicuna_v1.1": "vicuna", "llama-2-chat": "llama-2", "gemma-it": "gemma",
           "qwen": "chatml"}

_PROBE = [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"},
          {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]


def get_named(name: str) -> ChatTemplate:
    key = ALIASES.get(name, name)
    if key not in NAMED:
        raise ValueError(f"unknown chat template {name!r} (named templates: {', '.join(sorted(NAMED))})")
    return NAMED[key]


def from_jinja(source: str, bos: str = "", eos: str = "", name: str = "jinja") -> ChatTemplate:
    """A template that renders with `source` and uses the role strings of the matching named one."""
    base = NAMED["default"]
    try:
        rendered = _render_jinja(source, _PROBE, True, bos, eos)
    except ValueError:
        rendered = None
    for cand in NAMED.values():
        if rendered is not None and cand.render_roles(_PROBE, True) in (rendered, rendered.removeprefix(bos)):
            base = cand
            break
    stops = base.stop_strs or ((eos,) if eos else ())
    return ChatTemplate(f"{name}({base.name})", base.roles, None, stops, source, bos, eos)


def from_sglang_json(path: str) -> ChatTemplate:
    """SGLang's --chat-template file.json: {"name", "system", "user", "assistant", "sep_style", "sep", ...}."""
    with open(path) as f:
        d = json.load(f)
    missing = [k for k in ("name", "user", "assistant") if k not in d]
    if missing:
        raise ValueError(f"chat template {path!r} lacks {', '.join(missing)}")
    style, sep = d.get("sep_style", "CHATML"), d.get("sep", "")
    styles = {"CHATML": ("{r}\n", sep + "\n"), "ADD_COLON_SINGLE": ("{r}: ", sep), "NO_COLON_SINGLE": ("{r}", sep),
              "ADD_COLON_TWO": ("{r}: ", sep)}
    if style not in styles:
        raise ValueError(f"chat template {path!r}: sep_style {style!r} not supported (use one of {', '.join(styles)})")
    begin, end = styles[style]
    roles = {r: (begin.format(r=d.get(r, r)), end) for r in ROLES}
    stop = d.get("stop_str") or ([sep] if sep else [])
    stop = [stop] if isinstance(stop, str) else stop
    return ChatTemplate(str(d["name"]), roles, d.get("system_message"), tuple(stop))


def load_chat_template(tokenizer: Any = None, override: str | None = None) -> ChatTemplate:
    """`override` (ServerArgs.chat_template): a named template, a .json (SGLang format) or a .jinja file.
    Otherwise the tokenizer's own template, else "default"."""
    bos = str(getattr(tokenizer, "bos_token", None) or "")
    eos = str(getattr(tokenizer, "eos_token", None) or "")
    if override:
        if override.endswith(".json"):
            return from_sglang_json(_existing(override))
        if override.endswith(".jinja"):
            with open(_existing(override)) as f:
                return from_jinja(f.read(), bos, eos, name=os.path.basename(override))
        return get_named(override)
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, str) and source:
        return from_jinja(source, bos, eos)
    return NAMED["default"]


def load_chat_template_from_path(model_path: str | None, override: str | None = None) -> ChatTemplate:
    """The same from a local HF folder's files (no transformers import); a non-local path (e.g. a hub
    id served by a remote SGLang) picks a named template from the model's name."""
    if override:
        return load_chat_template(None, override)
    if model_path and os.path.isdir(model_path):
        cfg: dict[str, Any] = {}
        cfg_file = os.path.join(model_path, "tokenizer_config.json")
        if os.path.isfile(cfg_file):
            with open(cfg_file) as f:
                cfg = json.load(f)
        source = cfg.get("chat_template")
        jinja_file = os.path.join(model_path, "chat_template.jinja")
        if os.path.isfile(jinja_file):
            with open(jinja_file) as f:
                source = f.read()
        if isinstance(source, str) and source:
            return from_jinja(source, _tok(cfg.get("bos_token")), _tok(cfg.get("eos_token")))
        return NAMED["default"]
    name = (model_path or "").lower()
    for key, tmpl in (("llama-3", "llama-3"), ("llama3", "llama-3"), ("vicuna", "vicuna"), ("llama-2", "llama-2"),
                      ("gemma", "gemma"), ("qwen", "chatml"), ("smollm", "chatml"), ("chatml", "chatml")):
        if key in name:
            return NAMED[tmpl]
    return NAMED["default"]


def _tok(v: Any) -> str:
    if isinstance(v, dict):  # AddedToken serialized form
        return str(v.get("content", ""))
    return str(v or "")


def _existing(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"chat template file {path!r} does not exist")
    return path
