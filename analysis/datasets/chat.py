"""Chat records: a conversation as a list of turns, as OpenAI-style data (``messages`` of
``{"role", "content"}``) and ShareGPT-style data (``conversations`` of ``{"from", "value"}``)
hold them.

Why the last assistant turn is the response: it is what the record trains the model to say; the
turns before it are its prompt (every earlier turn, system and assistant ones included), written
through the tokenizer's chat template in instruct mode exactly as a chat model sees them. Turns
after the last assistant turn are not part of either. In base mode the prompt is the turns'
texts, one per line, as the paper's scripts join instruction and input.

A record is a chat record when it has no instruction field (of the field map) and holds one of
:data:`CHAT_FIELDS`; every problem is said naming the field and the 1-based turn.
"""

from __future__ import annotations

from typing import Any

CHAT_FIELDS = ("messages", "conversations")
# ShareGPT's speaker names -> chat template roles; other names pass as they are written.
ROLE_NAMES = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}

Turns = tuple[tuple[str, str], ...]

__all__ = ["CHAT_FIELDS", "Turns", "chat_field", "chat_turns"]


def chat_field(record: dict[str, Any], instruction_field: str) -> str | None:
    """The field holding a chat record's turns, or None for an instruction record. A field that
    is null counts as absent: a Parquet table mixing both shapes has every column in each row."""
    if record.get(instruction_field) is not None:
        return None
    return next((name for name in CHAT_FIELDS if record.get(name) is not None), None)


def chat_turns(record: dict[str, Any], field: str) -> tuple[Turns, str] | str:
    """(the prompt's turns as (role, text), the response) of a chat record, or why it is not
    usable (a problem naming the field and turn)."""
    value = record[field]
    if not isinstance(value, list):
        return f"field {field!r} must be a list of turns, found {_kind(value)}"
    turns: list[tuple[str, str]] = []
    for number, turn in enumerate(value, start=1):
        parsed = _turn(turn)
        if isinstance(parsed, str):
            return f"turn {number} of {field!r}: {parsed}"
        turns.append(parsed)
    last = max(
        (index for index, (role, _text) in enumerate(turns) if role == "assistant"), default=None
    )
    if last is None:
        return (
            f"no assistant turn in {field!r} (roles: "
            f"{', '.join(sorted({role for role, _ in turns})) or 'none'}): the response is "
            "the last assistant turn"
        )
    response = turns[last][1]
    if not response.strip():
        return f"empty output (turn {last + 1} of {field!r}): there is no response to measure"
    return tuple(turns[:last]), response


def _turn(turn: object) -> tuple[str, str] | str:
    if not isinstance(turn, dict):
        return f"expected an object with a role and its text, found {_kind(turn)}"
    if "role" in turn or "content" in turn:
        role_key, text_key = "role", "content"
    else:
        role_key, text_key = "from", "value"
    role = turn.get(role_key)
    if not isinstance(role, str) or not role:
        return f"{role_key!r} must be a non-empty string, found {_kind(role)}"
    text = _text(turn.get(text_key))
    if text is None:
        return f"{text_key!r} must be text (or a list of text parts), found {_kind(turn.get(text_key))}"
    return ROLE_NAMES.get(role.lower(), role.lower()), text


def _text(content: object) -> str | None:
    """A turn's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    return None


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
