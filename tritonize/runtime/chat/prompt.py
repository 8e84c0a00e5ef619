"""The generator's prompt: the template with the question and, for a fallback, the closest FAQ entries.

The template (`prompt.txt`) has the fields `{question}` and `{context}`; context is each entry as
CONTEXT_ENTRY, best first, or '' (generative mode). Entries are dropped from the worst up until the
prompt and the new tokens fit the generator's context, counted with the generator's own tokenizer; a
question that does not fit even alone is refused with the generator's own check and message.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

FIELDS = ("question", "context")
CONTEXT_ENTRY = "Question: {question}\nAnswer: {answer}\n\n"


def check_template(template: str) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise ValueError(f"prompt template: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"allowed: {{question}}, {{context}} (double braces for literal ones)")
    if "question" not in names:
        raise ValueError("prompt template: {question} is missing")
    return template


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
        self.count_tokens = count_tokens  # text -> number of generator tokens
        self.budget = budget

    def render(self, question: str, entries: list[tuple[str, str]]) -> str:
        context = "".join(CONTEXT_ENTRY.format(question=q, answer=a) for q, a in entries)
        return self.template.format(question=question, context=context)

    def build(self, question: str, entries: list[tuple[str, str]], max_new_tokens: int | None) -> tuple[str, int, int]:
        """The prompt with as many of the best entries as fit, how many went in, and its token count."""
        room = self.budget.prompt_tokens(max_new_tokens)
        for n in range(len(entries), 0, -1):
            prompt = self.render(question, entries[:n])
            tokens = self.count_tokens(prompt)
            if tokens <= room:
                return prompt, n, tokens
        prompt = self.render(question, [])
        return prompt, 0, self.count_tokens(prompt)
