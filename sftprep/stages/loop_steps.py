"""Turns read off the steps of one render's message loop, for templates that are not prefix-local.

Why: a template that is not prefix-local (prefix_renders.py; Qwen3's reads the number of
messages to find the last user query) has every prefix of a conversation rendered to locate its
turns (render.py), so a conversation of n messages costs about n renders of up to n messages:
quadratic, ~3-5x the cost per message at 512 turns as at 16, even with minijinja. One render
holds the answer instead: a Jinja render runs the template's message loop one step per message,
and a step prints that message's text. Rendered with a LoopContext that notes where the text
stood when each step began (`StepLoop`; a loop that reads no `loop` gets no LoopContext, and
there the watched list's own fetches mark the steps), the full render F is cut into steps
s[0] <= ... <= s[n], and assistant turn i trains

    F[s[i] + common_prefix(P, F[s[i]:s[i+1]]) : s[i+1]]      (less trailing whitespace)

where P is the generation prompt: what the template prints after its loop when asked for one.
That is the rule render.py applies with every prefix rendered (a turn starts after the
generation prompt, or after the part of it that F holds there, and ends where the next message
begins), read off the full render (render._step_span): the same rule on the same text, not a
search.

Why it is the better rule where it applies: the per-prefix renders equal it wherever the
template renders each prefix as the full render begins (then render(messages[:i]) is F[:s[i]]
and both rules read the same text). Where it does not (Qwen3 renders the reasoning of the last
turn of a prefix, and keeps or drops earlier reasoning by where the last user query is), the
per-prefix renders align a turn's own render with F by its longest suffix and the history by
a search: a heuristic, which random tool chats fool on Qwen3.5/3.6 (turns dropped as
unlocatable, a span put on another turn's equal text; tests/sftprep/stages/test_loop_steps.py).
The step is what the template printed for that message, so it cannot be fooled so.

When it is used: it is not a theorem for every template (a template's step could print part of
the next message's frame, `</s>` at the start of the next step, say), so only where shown:
- the template (`PROVEN`: published templates whose steps print exactly their own message,
  read and tested: spans equal to every prefix rendered on the chat corpus, to TRL's
  `{% generation %}` masks on random and hostile chats, and each trained step holding its
  whole turn), its syntax (`steps_problem`: one unfiltered top-level loop over
  the messages, the generation prompt read only after it, and after it no message and no name
  the template sets, so P is a function of the inputs alone), and `renderer` not jinja2;
- the row: one pass over the messages, by one loop (`StepLoop`), printing nothing after it
  without the generation prompt (tail(False) empty), trained turns all of the assistant.
P is read off a probe conversation (render.PROMPT_PROBE, with and without the prompt), never
off the row or an earlier one, and remembered per value of the names the tail reads
(chat_template.known_tail): so a row costs one render, and its spans never depend on which rows
a process met first (a leading assistant turn, which no prefix can prompt for, included).
Rows located by steps are not sampled against the per-prefix renders (as minijinja's are): where
the two differ, the fuzzing found the per-prefix renders wrong, and a build must not stop on them.
"""

from collections import Counter

import jinja2
import jinja2.nodes as nodes
import jinja2.runtime

from sftprep.stages.prefix_renders import (
    JINJA_RUNTIME_NAMES,
    Watched,
    assigned_names,
    message_loops,
    names_loaded,
)

PROVEN = frozenset(
    {
        "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",  # Qwen3
        "a4aee8afcf2e0711942cf848899be66016f8d14a889ff9ede07bca099c28f715",  # Qwen3.5, thinking
        "273d8e0e683b885071fb17e08d71e5f2a5ddfb5309756181681de4f5a1822d80",  # Qwen3.5
        "e84f32a23fdda27689f868aa4a1a5621f41133e51a48d7f3efcbea2839574259",  # Qwen3.6
        "c3cf9e34abf4f9e36c2d72165aa9c132d3e2a725b6c2586aaa3a8af9d7a81041",  # Qwen3.8
        "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",  # Llama-3.1
        "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",  # Llama-3.2
        "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6",  # Gemma-2
        "26a59556925c987317ce5291811ba3b7f32ec4c647c400c6cc7e3a9993007ba7",  # Mistral
        "0cd86fb80f520885e35040a8df321540e729d3358da41f27cf74d33103d94f62",  # Qwen2.5 (TRL's)
        "7de1c58e208eda46e9c7f86397df37ec49883aeece39fb961e0a6b24088dd3c4",  # Gemma-3
        "e8d5b5a546d3f19df16a5320c614fab05bdc4edd50e850f1afd947b503ea41cf",  # Llama-2
    }
)
"""sha256 of the templates `auto` locates by loop steps: the published templates of the
differential test whose syntax allows it (steps_problem). Any other template keeps the
per-prefix renders: the rule is shown on these, not proven for every template."""


def steps_problem(template: jinja2.Template, source: str) -> str:
    """Why the loop steps of one render cannot stand for the turns, or "": the template must
    print each message from one unfiltered loop over `messages` (or a tail of it, _step_aliases)
    at its top level (so its text is yielded step by step, not buffered), read add_generation_prompt only after
    that loop, and after it read no message and no name the template sets (its tail is then a
    function of the inputs alone, the same after every prefix)."""
    try:
        tree = template.environment.parse(source)
    except jinja2.TemplateSyntaxError as err:
        return f"does not parse: {err.message}"
    aliases = _step_aliases(tree)
    loops = message_loops(tree, aliases)
    if len(loops) != 1:
        return f"{len(loops)} loops over the messages at its top level, not one"
    loop = tree.body[loops[0]]
    if loop.else_ or loop.recursive or loop.test is not None:
        return "its message loop has an else block, a filter or is recursive"
    if names_loaded(tree.body[: loops[0] + 1]) & {"add_generation_prompt"}:
        return "it reads add_generation_prompt before the end of its message loop"
    after = tree.body[loops[0] + 1 :]
    set_names = set(+assigned_names(tree)) | aliases | JINJA_RUNTIME_NAMES
    if late := sorted(names_loaded(after) & set_names):
        return f"after its message loop it reads {late[0]}, which the template sets"
    return ""


def _step_aliases(tree: nodes.Template) -> set[str]:
    """`messages` and the names the top level (or a top-level if's branches) sets to it or to a
    tail of it (`{% set loop_messages = messages[1:] %}`: Gemma-3's, Llama-2's system message),
    when every binding of the name anywhere is such: a watched render then loops over the
    watched list or a watched tail of it (Watched.slices)."""
    names, tails = {"messages"}, Counter()
    for node in _top_assigns(tree.body):
        if isinstance(node.target, nodes.Name) and _is_message_tail(node.node, names):
            names.add(node.target.name)
            tails[node.target.name] += 1
    assigned = assigned_names(tree)
    return {name for name in names if name == "messages" or assigned[name] == tails[name]}


def _top_assigns(body: list):
    """The `set` statements of `body` and of the branches of its if statements, in order."""
    for node in body:
        if isinstance(node, nodes.Assign):
            yield node
        elif isinstance(node, nodes.If):
            yield from _top_assigns(node.body)
            for branch in node.elif_:
                yield from _top_assigns([branch])
            yield from _top_assigns(node.else_)


def _is_message_tail(expr, names: set[str]) -> bool:
    """Whether `expr` is one of `names`, or `name[k:]` with k a non-negative integer literal."""
    if isinstance(expr, nodes.Name):
        return expr.name in names
    return (
        isinstance(expr, nodes.Getitem)
        and isinstance(expr.node, nodes.Name)
        and expr.node.name in names
        and isinstance(expr.arg, nodes.Slice)
        and isinstance(expr.arg.start, nodes.Const)
        and isinstance(expr.arg.start.value, int)
        and expr.arg.start.value >= 0
        and expr.arg.stop is None
        and expr.arg.step is None
    )


def fingerprint_part(mode: str) -> list | None:
    """What the build fingerprint holds of the loop steps for renderer `mode`: the templates
    they locate turns on (None under jinja2, which never uses them)."""
    return None if mode == "jinja2" else sorted(PROVEN)


class StepLoop(jinja2.runtime.LoopContext):
    """A template's LoopContext that, looping over a Watched list, appends to its `loop_starts`
    where the text stood when each step began, and where it stood when the loop ended. A look
    ahead (`loop.last`) fetches the next message early; the step still begins here."""

    def __init__(self, iterable, *args, **kwargs):
        super().__init__(iterable, *args, **kwargs)
        self.steps_of = iterable if isinstance(iterable, Watched) else None
        if self.steps_of is not None:
            self.steps_of.loop_starts.append([])

    def __next__(self):
        watched = self.steps_of
        if watched is None:
            return super().__next__()
        try:
            return super().__next__()
        finally:  # a step begins, or the loop ends (StopIteration)
            watched.loop_starts[-1].append(watched.emitted())


def stepped(template: jinja2.Template, source: str) -> jinja2.Template:
    """A copy of `template` whose loops are StepLoops (its own compiled module: the template
    itself is left as it is). It renders the same text."""
    copy = template.environment.from_string(source)
    copy.globals = template.globals
    copy.root_render_func.__globals__["LoopContext"] = StepLoop
    return copy


def step_starts(watched: Watched, full: str) -> list | None:
    """s[0..n] of a render of `watched` by a stepped template (module docstring), or None when
    the render was not one pass by one loop, or printed something after the loop. Where the
    template loops over a tail it sliced off instead (`set messages = messages[1:]`, Llama-3's
    system message), the messages before that tail have no step (None)."""
    count, offset = list.__len__(watched), 0
    while not watched.passes and not watched.loop_starts and len(watched.slices) == 1:
        start, watched = watched.slices[0]
        offset += start
    if watched.passes != 1 or len(watched.loop_starts) > 1:
        return None
    if watched.loop_starts:
        starts = watched.loop_starts[0]
    elif watched.by_template:  # a loop that reads no `loop`: each fetch begins a step
        starts = watched.fetched_at
    else:
        return None
    if len(starts) != count - offset + 1 or starts[-1] != len(full):
        return None
    return [None] * offset + starts
