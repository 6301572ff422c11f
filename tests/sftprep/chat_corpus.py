"""Multi-turn chats with system prompts, reasoning, tool calls and the edge cases templates differ on.

Built from the real Alpaca rows in ../shared/assets so the text is real SFT data; the structure
(reasoning, tool round trips, empty replies, assistant-first, consecutive turns, mid-conversation
system) is what `apply_chat_template` accepts and the reference tests compare on every family.
"""

import json

from tests.conftest import shared_data

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string", "description": "The word."}},
                "required": ["word"],
            },
        },
    }
]


def _rows() -> list[dict]:
    return json.loads(shared_data("alpaca_en_demo.json").read_text())


def _prompt(row: dict) -> str:
    return row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")


def _call(word: str, as_string: bool) -> dict:
    arguments = {"word": word}
    return {
        "type": "function",
        "function": {
            "name": "lookup",
            "arguments": json.dumps(arguments) if as_string else arguments,
        },
    }


def _reasoning(row: dict) -> str:
    return f"The user asks: {row['instruction'][:60]}. I should answer directly."


def chats(count: int = 120) -> list[dict]:
    """`count` rows of {"messages", optional "tools", "kind"}; kinds cycle through every shape."""
    rows = _rows()
    shapes = [
        _single,
        _multi,
        _multi_reasoning,
        _tool_round_trip,
        _tool_round_trip_reasoning,
        _ends_on_user,
        _empty_reply,
        _assistant_first,
        _consecutive_assistants,
        _mid_system,
    ]
    out = []
    for k in range(count):
        shape = shapes[k % len(shapes)]
        picked = [rows[(3 * k + j) % len(rows)] for j in range(3)]
        chat = shape(picked, k)
        out.append({**chat, "kind": shape.__name__.lstrip("_")})
    return out


def _turns(rows, reasoning=False):
    messages = []
    for row in rows:
        messages.append({"role": "user", "content": _prompt(row)})
        reply = {"role": "assistant", "content": row["output"]}
        if reasoning:
            reply["reasoning_content"] = _reasoning(row)
        messages.append(reply)
    return messages


def _system(k):
    return [{"role": "system", "content": "You are a helpful assistant."}] if k % 2 else []


def _single(rows, k):
    return {"messages": _turns(rows[:1])}


def _multi(rows, k):
    return {"messages": _system(k) + _turns(rows)}


def _multi_reasoning(rows, k):
    return {"messages": _system(k) + _turns(rows, reasoning=True)}


def _tool_messages(rows, k, reasoning):
    first, second = rows[0], rows[1]
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [_call(first["instruction"][:20], k % 4 < 2)],
    }
    if reasoning:
        call["reasoning_content"] = "I need to look the word up first."
    final = {"role": "assistant", "content": first["output"]}
    if reasoning:
        final["reasoning_content"] = _reasoning(first)
    return [
        {"role": "user", "content": _prompt(first)},
        call,
        {"role": "tool", "content": second["output"][:200]},
        final,
    ]


def _tool_round_trip(rows, k):
    return {"messages": _system(k) + _tool_messages(rows, k, False), "tools": TOOLS}


def _tool_round_trip_reasoning(rows, k):
    messages = _system(k) + _tool_messages(rows, k, True) + _turns(rows[2:], reasoning=True)
    return {"messages": messages, "tools": TOOLS}


def _ends_on_user(rows, k):
    return {"messages": _turns(rows[:2]) + [{"role": "user", "content": _prompt(rows[2])}]}


def _empty_reply(rows, k):
    messages = _turns(rows[:2])
    messages[1]["content"] = ""
    return {"messages": messages}


def _assistant_first(rows, k):
    return {
        "messages": [{"role": "assistant", "content": "Hello! How can I help?"}] + _turns(rows[:2])
    }


def _consecutive_assistants(rows, k):
    messages = _turns(rows[:2])
    messages.insert(2, {"role": "assistant", "content": "Anything else?"})
    return {"messages": messages}


def _mid_system(rows, k):
    messages = _turns(rows[:2])
    messages.insert(2, {"role": "system", "content": "Answer briefly from now on."})
    return {"messages": messages}
