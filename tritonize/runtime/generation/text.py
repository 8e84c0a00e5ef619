"""Token ids -> text pieces for streaming, never splitting a UTF-8 character or leaking a stop string.

Each token id is mapped once to the exact bytes it stands for (byte-level BPE: GPT-2's byte alphabet;
SentencePiece-style Metaspace: '▁' is a space and <0xNN> a byte). Streaming then feeds those bytes to
an incremental UTF-8 decoder, which holds back an incomplete character until its last byte arrives
(random weights happily emit half characters). The whole text is the concatenation of the pieces, so
streamed and non-streamed text are equal by construction.
"""

from __future__ import annotations

import codecs
import json
import re

from tokenizers import Tokenizer

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte (the inverse of bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _decoder_types(decoder: dict | None) -> list[str]:
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [t for d in decoder.get("decoders", []) for t in _decoder_types(d)]
    return [decoder.get("type", "")]


class TokenBytes:
    """The bytes of every token id; special tokens are empty (they are never shown)."""

    def __init__(self, tokenizer: Tokenizer):
        spec = json.loads(tokenizer.to_str())
        kinds = _decoder_types(spec.get("decoder"))
        self.strip_leading_space = False
        special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.table: list[bytes] = []
        alphabet = _byte_level_alphabet() if "ByteLevel" in kinds else None
        if "Metaspace" in kinds:
            scheme = (spec.get("decoder") or {}).get("prepend_scheme", "always")
            self.strip_leading_space = scheme != "never"  # the decoder drops the space it prepended
        for i in range(size):
            token = tokenizer.id_to_token(i)
            if token is None or i in special:
                self.table.append(b"")
            elif alphabet is not None:
                self.table.append(bytes(alphabet.get(c, 0) for c in token) if all(c in alphabet for c in token) else token.encode())
            elif "Metaspace" in kinds:
                m = _BYTE_TOKEN.match(token) if "ByteFallback" in kinds else None
                self.table.append(bytes([int(m.group(1), 16)]) if m else token.replace("▁", " ").encode())
            else:  # other decoders (WordPiece ...): the tokenizer's own decode, one token at a time
                self.table.append(tokenizer.decode([i], skip_special_tokens=True).encode())

    def __getitem__(self, token_id: int) -> bytes:
        return self.table[token_id] if 0 <= token_id < len(self.table) else b""


class TextStream:
    """Turns a sequence's new token ids into text pieces; holds back text that may begin a stop string."""

    def __init__(self, token_bytes: TokenBytes, stop: tuple[str, ...] = ()):
        self.token_bytes = token_bytes
        self.stop = stop
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything decoded so far
        self.emitted = 0  # characters of `text` already handed out
        self.at_start = token_bytes.strip_leading_space
        self.stopped = False

    def push(self, token_id: int) -> str:
        """The text that became final with this token ('' while a character or a stop prefix is incomplete)."""
        data = self.token_bytes[token_id]
        if self.at_start and data:
            data = data[1:] if data.startswith(b" ") else data
            self.at_start = False
        self.text += self.decoder.decode(data)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest: bytes of an unfinished character (as U+FFFD) and any held-back stop prefix."""
        if not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        end = len(self.text)
        for s in self.stop:
            hit = self.text.find(s, self.emitted)
            if hit >= 0 and hit < end:
                end, self.stopped = hit, True
        if not self.stopped and not final:
            end -= self._held_back()
        piece = self.text[self.emitted : end]
        self.emitted = end
        if self.stopped:
            self.text = self.text[:end]
        return piece

    def _held_back(self) -> int:
        """Length of the longest unemitted suffix that is the start of a stop string."""
        tail = self.text[self.emitted :]
        for n in range(min(len(tail), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(tail[-n:]) for s in self.stop):
                return n
        return 0
