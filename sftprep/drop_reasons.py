"""Every reason a row can be dropped for, the keys of `dropped` in the manifest.

One enum, so that a reason cannot be misspelled in one place and counted apart; the README's table
of drop reasons is checked against it (tests/sftprep/test_drop_reasons.py). Values are plain
strings on disk and across processes (`DropReason.UNKNOWN_ROLE.value == "unknown_role"`).
"""

from enum import Enum


class DropReason(str, Enum):
    """Why a row was not used; each is counted under its value."""

    # the file: a row that cannot be read
    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_CSV = "malformed_csv"
    BAD_ROW_TYPE = "bad_row_type"
    TOO_DEEP = "too_deep"
    NUMBER_TOO_LARGE = "number_too_large"
    # the row: fields that do not fit the detected format
    MISSING_FIELD = "missing_field"
    BAD_FIELD_TYPE = "bad_field_type"
    EMPTY_TEXT = "empty_text"
    EMPTY_COMPLETION = "empty_completion"
    EMPTY_CONVERSATION = "empty_conversation"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_ROLE = "unknown_role"
    MISSING_CONTENT = "missing_content"
    UNSUPPORTED_CONTENT = "unsupported_content"
    BAD_TOOL_CALLS = "bad_tool_calls"
    BAD_TOOLS = "bad_tools"
    TOOLS_UNSUPPORTED = "tools_unsupported"
    INVALID_UNICODE = "invalid_unicode"
    FORMATTER_ERROR = "formatter_error"
    # rendering
    NO_CHAT_TEMPLATE = "no_chat_template"
    TEMPLATE_ERROR = "template_error"
    NO_ASSISTANT_TURN = "no_assistant_turn"
    UNLOCATABLE_TURN = "unlocatable_turn"
    # the length policy
    NO_LOSS_TOKENS = "no_loss_tokens"
    TOO_LONG = "too_long"
    NO_RESPONSE_TEMPLATE = "no_response_template"
    TEXT_TOO_LONG = "text_too_long"

    def __str__(self) -> str:
        return self.value


DESCRIPTIONS = {
    DropReason.MALFORMED_JSON: "a JSON line (or array item) that does not parse",
    DropReason.INVALID_UTF8: "a line that is not UTF-8",
    DropReason.MALFORMED_CSV: "a CSV line with another number of fields than the header",
    DropReason.BAD_ROW_TYPE: "a JSON value that is not an object",
    DropReason.TOO_DEEP: "JSON nested deeper than Python's parser can go",
    DropReason.NUMBER_TOO_LARGE: "a JSON integer of over 4,300 digits (more than Python converts)",
    DropReason.MISSING_FIELD: "the format's field is missing or null",
    DropReason.BAD_FIELD_TYPE: "a field of the wrong type (e.g. text that is not a string)",
    DropReason.EMPTY_TEXT: "an empty text",
    DropReason.EMPTY_COMPLETION: "an empty completion or Alpaca output",
    DropReason.EMPTY_CONVERSATION: "a conversation with no messages",
    DropReason.BAD_MESSAGE: "a message that is not an object with a role",
    DropReason.UNKNOWN_ROLE: "a role outside system, user, assistant, tool, developer (ShareGPT roles are mapped)",
    DropReason.MISSING_CONTENT: "a message with no content (and no tool calls)",
    DropReason.UNSUPPORTED_CONTENT: "a content part that is not text",
    DropReason.BAD_TOOL_CALLS: "tool_calls that are not a list of {function: {name, arguments}}",
    DropReason.BAD_TOOLS: "`tools` that are not a list of JSON schemas",
    DropReason.TOOLS_UNSUPPORTED: "tool calls or tools the chat template does not render (it would drop them)",
    DropReason.INVALID_UNICODE: "a lone UTF-16 surrogate (an unpaired \\uXXXX escape)",
    DropReason.FORMATTER_ERROR: "--formatter raised or returned something unusable",
    DropReason.NO_CHAT_TEMPLATE: "a conversation, but the tokenizer has no chat template",
    DropReason.TEMPLATE_ERROR: "the chat template rejected the conversation",
    DropReason.NO_ASSISTANT_TURN: "nothing to train: no assistant turn",
    DropReason.UNLOCATABLE_TURN: "a trained turn the chat template renders inconsistently, so its tokens cannot be located",
    DropReason.NO_LOSS_TOKENS: "no token left to train (e.g. truncation cut off the whole answer)",
    DropReason.TOO_LONG: "longer than --max-length with --overlong drop",
    DropReason.NO_RESPONSE_TEMPLATE: "a text without its --response-template marker (nothing would train)",
    DropReason.TEXT_TOO_LONG: "a rendered text over --max-text-mb (8 MiB of characters)",
}
