"""The generator's prompt: the template with the question and, for a generated answer, the closest FAQ
entries and the conversation's earlier turns.

The template (`prompt.txt`) has the fields `{question}`, `{context}` and `{history}`: context is each FAQ
entry as CONTEXT_ENTRY, best first, or '' (generative mode); history is each earlier turn as HISTORY_TURNS
writes it, oldest first, or ''. A template without `{history}` gets the history in front of the whole
prompt. What fits the generator's context, counted with its own tokenizer, goes in: the question always
(one that does not fit alone is refused with the generator's own check and message), then as many of the
best entries as fit, then as many of the most recent turns as fit.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

FIELDS = ("question", "context", "history")
CONTEXT_ENTRY = "Question: {question}\nAnswer: {answer}\n\n"
# Earlier turns in the entries' own question/answer form, so the generator continues one dialogue style.
HISTORY_TURNS = {"user": "Question: {text}\n", "assistant": "Answer: {text}\n\n"}
Turn = tuple[str, str]  # (role: user | assistant, text)


def check_template(template: str) -> str:
    """The template, checked: its fields are FIELDS ({question} required); errors say how to fix it."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"prompt template: {e} (write literal braces as {{{{ and }}}})") from None
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise ValueError(f"prompt template: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"allowed: {', '.join('{' + f + '}' for f in FIELDS)} (double braces for literal ones)")
    if "question" not in names:
        raise ValueError("prompt template: {question} is missing")
    return template


def render_history(turns: Sequence[Turn]) -> str:
    return "".join(HISTORY_TURNS[role].format(text=text) for role, text in turns)


@dataclass(frozen=True)
class Budget:
    """How many prompt tokens the generator takes for a request."""

    max_context: int
    default_max_new_tokens: int
    decoder_only: bool

    def prompt_tokens(self, max_new_tokens: int | None) -> int:
        if not self.decoder_only:
            return self.max_context  # encoder-decoder: the prompt has the whole encoder context
        return self.max_context - (max_new_tokens or self.default_max_new_tokens)


class Prompter:
    def __init__(self, template: str, count_tokens, budget: Budget):
        self.template = check_template(template)
        self.has_history = "history" in {name for _, name, _, _ in string.Formatter().parse(template) if name}
        self.count_tokens = count_tokens  # text -> number of generator tokens
        self.budget = budget

    def render(self, question: str, entries: Sequence[tuple[str, str]], turns: Sequence[Turn] = ()) -> str:
        context = "".join(CONTEXT_ENTRY.format(question=q, answer=a) for q, a in entries)
        history = render_history(turns)
        if self.has_history:
            return self.template.format(question=question, context=context, history=history)
        return history + self.template.format(question=question, context=context)

    def build(self, question: str, entries: Sequence[tuple[str, str]], max_new_tokens: int | None,
              turns: Sequence[Turn] = ()) -> tuple[str, int, int]:
        """The prompt with as many of the best entries, then of the latest turns, as fit; how many entries
        went in, and its token count."""
        room = self.budget.prompt_tokens(max_new_tokens)
        n = next((n for n in range(len(entries), 0, -1) if self.count_tokens(self.render(question, entries[:n])) <= room), 0)
        prompt = self.render(question, entries[:n])
        tokens = self.count_tokens(prompt)
        for first in range(len(turns)):  # all turns, then without the oldest, ...
            with_turns = self.render(question, entries[:n], turns[first:])
            with_tokens = self.count_tokens(with_turns)
            if with_tokens <= room:
                return with_turns, n, with_tokens
        return prompt, n, tokens
