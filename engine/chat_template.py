"""Chat templates rendered the way transformers renders them (`apply_chat_template`).

Owns: the sandboxed jinja2 environment that chat templates run in (`ImmutableSandboxedEnvironment` with
trim_blocks and lstrip_blocks, the loop-controls extension, a `{% generation %}` block that renders its body,
`raise_exception`, `strftime_now`, a `tojson` that leaves HTML characters alone, and transformers' `dict` and
`namespace` that refuse underscore-prefixed names); choosing among named templates (`select_template`);
checking and normalizing the messages (`check_messages`); and rendering (`render_chat`). Templates come from a
checkpoint, so they are untrusted code: they run only in the sandbox, and see only plain JSON-like data.

jinja2 (>= 3.1.6: older versions have known sandbox escapes) is imported when the first template is compiled.
Template errors (a syntax error, `raise_exception`, an undefined variable) are `InputError`s naming the
template's source. Host-only: must not import wgpu, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from wgrpo.engine.errors import InputError

__all__ = ["JINJA_REQUIREMENT", "check_messages", "render_chat", "select_template"]

JINJA_REQUIREMENT = "jinja2>=3.1.6"
_JINJA_MINIMUM = (3, 1, 6)
# Names a message's reasoning comes under; templates read the first (transformers fills it from the others)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _jinja2():
    """The jinja2 module, checked to be a version without the known sandbox escapes."""
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise ImportError(f"chat templates need the jinja2 package: pip install '{JINJA_REQUIREMENT}'") from None
    version = tuple(int(part) for part in re.findall(r"\d+", jinja2.__version__)[:3])
    if version < _JINJA_MINIMUM:
        raise ImportError(f"chat templates need {JINJA_REQUIREMENT} (older versions have sandbox escapes); "
                          f"found jinja2 {jinja2.__version__}: pip install -U '{JINJA_REQUIREMENT}'")
    return jinja2


@lru_cache(maxsize=1)
def _environment():
    """The environment transformers compiles chat templates in (`utils/chat_template_utils.py`)."""
    jinja2 = _jinja2()

    class GenerationBlock(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's tokens for training masks; rendering
        needs only its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

        def _render_body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes <, >, & and ' for HTML, which would change the prompt text
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class TemplateDict:
        """`dict(...)` and `dict.fromkeys(...)`, without the type itself (and its attributes) in reach."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """jinja's namespace, refusing underscore-prefixed attributes (a way to CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore-prefixed attributes "
                                                      f"on a namespace, got {name!r}")

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    environment.globals["dict"] = TemplateDict()
    environment.globals["namespace"] = TemplateNamespace
    return environment


@lru_cache(maxsize=64)
def _compiled(template: str):
    return _environment().from_string(template)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def select_template(chat_template: str | Mapping[str, str] | None, name: str | None = None,
                    tools: Sequence | None = None, source: str = "tokenizer") -> str:
    """The template text to render, as transformers' `get_chat_template` picks it.

    `chat_template` is the tokenizer's: one template, a dict of named ones, or None. `name` is a template name
    of that dict, or else a template text of its own; without it a dict gives its `tool_use` template when there
    are `tools`, else its `default`."""
    if isinstance(chat_template, Mapping):
        if name is not None:
            return chat_template.get(name, name)
        if tools is not None and "tool_use" in chat_template:
            return chat_template["tool_use"]
        if "default" in chat_template:
            return chat_template["default"]
        raise InputError(f"{source}: the tokenizer has several chat templates and none is named 'default'; pass "
                         f"chat_template= one of {', '.join(map(repr, sorted(chat_template)))}")
    if name is not None:
        return name
    if chat_template is None:
        raise InputError(f"{source}: the tokenizer has no chat template (tokenizer_config.json has no "
                         f"chat_template and there is no chat_template.jinja beside it)")
    return chat_template


def check_messages(messages: Any) -> list[dict]:
    """`messages` as the template sees them: a fresh list of plain dicts, keys whose value is None dropped, and a
    message's reasoning under every name templates read it by (as transformers does). InputError unless
    `messages` is a non-empty list of dicts, each with a string `role` and a `content` (a message with
    `tool_calls` may go without)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError(f"apply_chat_template: messages must be a non-empty list of {{'role': ..., 'content': "
                         f"...}} dicts, got {_describe(messages)}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"apply_chat_template: messages[{index}] must be a {{'role': ..., 'content': ...}} "
                             f"dict, got {_describe(message)}")
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise InputError(f"apply_chat_template: messages[{index}] needs a 'role' string (user, assistant, "
                             f"system, ...), got {_describe(message.get('role'))}")
        if "content" not in message and not message.get("tool_calls"):
            raise InputError(f"apply_chat_template: messages[{index}] ({message['role']}) has no 'content'")
        plain = _plain_data({key: value for key, value in message.items() if value is not None})
        reasoning = next((plain[key] for key in _REASONING_FIELDS if plain.get(key) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        checked.append(plain)
    return checked


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _plain_data(value: Any) -> Any:
    """`value` rebuilt from plain JSON types (str, int, float, bool, None, dict, list, tuple); anything else
    becomes a placeholder naming its type: the sandbox does not know which methods of other objects are unsafe."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain_data(key): _plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain_data(item) for item in value)
    if hasattr(value, "item") and type(value).__module__ == "numpy":  # a numpy scalar
        return _plain_data(value.item())
    return f"<{type(value).__name__}>"


def render_chat(template: str, messages: Any, *, add_generation_prompt: bool = False,
                special_tokens: Mapping[str, str] | None = None, tools: Sequence[Mapping] | None = None,
                documents: Sequence[Mapping] | None = None, continue_final_message: bool | str = False,
                source: str = "chat template", **variables) -> str:
    """The text of `messages` rendered with `template` as transformers' `apply_chat_template(...,
    tokenize=False)` renders it for one conversation.

    The template sees `messages`, `tools` (JSON schema dicts), `documents`, `add_generation_prompt`, the
    tokenizer's `special_tokens` (bos_token, eos_token, ...) and `variables` (which win over special tokens of
    the same name). `continue_final_message` (True, or the name of the field to continue) leaves the last
    message open for the model to continue. `source` names the template's file in errors."""
    messages = check_messages(messages)
    if tools is not None:
        if not all(isinstance(tool, Mapping) for tool in tools):
            raise InputError("apply_chat_template: tools must be JSON schema dicts (functions are not converted)")
        tools = _plain_data(list(tools))
    if documents is not None:
        if not all(isinstance(document, Mapping) for document in documents):
            raise InputError("apply_chat_template: documents must be dicts with 'title' and 'text' keys")
        documents = _plain_data(list(documents))
    if continue_final_message and add_generation_prompt:
        raise InputError("apply_chat_template: continue_final_message and add_generation_prompt exclude each other "
                         "(continue the last message, or start a new assistant turn)")
    jinja2 = _jinja2()
    try:
        compiled = _compiled(template)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise InputError(f"{source}: the chat template has a syntax error at line {error.lineno}: "
                         f"{_one_line(error.message)}") from None
    final = _mark_final_message(messages, template, continue_final_message) if continue_final_message else None
    context = {**_plain_data(dict(special_tokens or {})), **_plain_data(variables)}
    try:
        text = compiled.render(messages=messages, tools=tools, documents=documents,
                               add_generation_prompt=bool(add_generation_prompt), **context)
    except jinja2.exceptions.TemplateError as error:
        raise InputError(f"{source}: the chat template refused the conversation: {_one_line(error)}") from None
    return _cut_after_final_message(text, final) if final is not None else text


def _mark_final_message(messages: list[dict], template: str, continue_final_message: bool | str) -> str:
    """Tag the end of the last message's text (so the rendering can be cut there); returns the untagged text."""
    name = continue_final_message if isinstance(continue_final_message, str) else "content"
    last = messages[-1]
    final = last.get(name)
    if final is None:
        raise InputError(f"apply_chat_template: continue_final_message: the last message has no {name!r} to continue")
    fields = [name]
    if name in _REASONING_FIELDS:  # the reasoning is under several names: tag whichever the template reads
        fields = [field for field in _REASONING_FIELDS if last.get(field) == final]
    if not any(field in template for field in fields):
        raise InputError(f"apply_chat_template: continue_final_message: the chat template does not read {name!r}")
    if isinstance(final, (list, tuple)):
        for block in reversed(final):
            if isinstance(block, dict) and "text" in block:
                text, block["text"] = block["text"], block["text"] + _CONTINUE_TAG
                return text
        raise InputError("apply_chat_template: continue_final_message: the last message has no text to continue")
    for field in fields:
        last[field] = last[field] + _CONTINUE_TAG
    return final


def _cut_after_final_message(text: str, final: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise InputError("apply_chat_template: continue_final_message: the chat template drops part of the last "
                         "message, so the rendering cannot end inside it")
    at = text.rindex(tag)
    if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return text[:at]
    return text[:at].rstrip()  # the template trimmed the message's trailing space, and the tag's with it
