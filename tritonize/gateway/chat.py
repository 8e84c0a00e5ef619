"""Chat messages -> one prompt for a generator.

With the checkpoint's chat template (the converter stores it in the generator's config), the messages
are rendered the way `transformers`' `apply_chat_template` renders them: Jinja2's sandbox, trim_blocks
and lstrip_blocks, `raise_exception`, the checkpoint's bos/eos tokens, `add_generation_prompt`.

Without one, the documented plain template: one line per message, "System: ...", "User: ...",
"Assistant: ..." (developer messages count as System, tool results as Tool), then "Assistant:" for the
reply.
"""

from __future__ import annotations

from functools import lru_cache

from tritonize.gateway.errors import bad_param
from tritonize.gateway.protocol import ChatMessage

PLAIN_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def plain_prompt(messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
    lines = [f"{PLAIN_ROLES[m.role]}: {m.text}" for m in messages]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)


@lru_cache(maxsize=32)
def _compiled(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return env.from_string(template)


def render(messages: list[ChatMessage], template: str | None, bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True) -> str:
    if not template:
        return plain_prompt(messages, add_generation_prompt)
    from jinja2.exceptions import TemplateError

    plain = [{"role": m.role, "content": m.text, **({"name": m.name} if m.name else {})} for m in messages]
    try:
        return _compiled(template).render(messages=plain, bos_token=bos_token, eos_token=eos_token,
                                          add_generation_prompt=add_generation_prompt)
    except TemplateError as e:  # the template refused these messages (e.g. roles out of order)
        raise bad_param("messages", f"the model's chat template refused the messages: {e}") from None
