"""The renders of every prefix of a conversation from one render, where the template allows it.

Locating turn i asks for render(messages[:i], add_generation_prompt=True) and render(messages[:i+1])
(render.py). Rendering each prefix makes a conversation of n messages cost n renders of up to n
messages: quadratic, 27x the cost per message at 512 turns as at 16. For a *prefix-local* template
the prefixes can be read off one render of the whole conversation instead, exactly:

    render(messages[:k], gen) == full[: b[k]] + tail(gen)        for every k >= 1

where b[k] is how much text the full render has produced when its message loop fetches message k,
and tail(gen) is what the template prints after its loop (the generation prompt). Why it is exact:
a Jinja render is a deterministic program over its inputs. Rendering messages[:k] runs the same
steps as rendering all of them, reading the same values, until the loop asks for message k, which
the prefix does not have; up to there both print the same text, b[k] characters of it. After the
loop the prefix prints tail(gen), and `tail` may only read inputs that no message changes.

A template is prefix-local when its syntax tree allows it (`prefix_local_problem`):
- its one loop over `messages` (or a name set to it) is a statement of the template's top level,
  with no `else` and not recursive, and `loop` in it is only read through its attributes, and not
  at all when the loop filters the messages (`for m in messages if ...`: LoopContext then peeks
  through Jinja's filter function, which the watched list cannot tell from the loop's own step);
- `messages` is otherwise only indexed (`messages[0]`, `messages[loop.index0 - 1]`), never passed
  to a filter, a test or a function, where a read could bypass the watched list below;
- `add_generation_prompt` is read only after the loop, and what comes after the loop reads only
  names the template never sets (so no state the loop left behind, like `ns.is_tool`).
and when the watched list (`Watched`) saw no read that a prefix could answer otherwise: the length
(`messages|length`, `loop.length`), an index at or past the messages the loop has fetched (a look
ahead, `messages[loop.index0 + 1]`; after the loop, any index but 0), a slice, a look ahead of the
loop itself (`loop.last`, `loop.nextitem`), more than one pass. Any of those, and the row's prefixes
are rendered one by one, as before; so a template that looks ahead only for tool messages (Qwen2.5)
is linear on the rows without them. tail(True) is taken from the exact render of the first message,
which must begin as the full render does.
SmolLM2's, Llama-3's, Gemma-2's, Mistral's and Qwen2.5's templates are prefix-local; Qwen3's is not
(it reads the number of messages to find the last user query, and renders the last assistant turn
otherwise), so it keeps the exact per-prefix renders.
"""

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import jinja2
import jinja2.nodes as nodes
import jinja2.runtime

_LOOP_NEXT = jinja2.runtime.LoopContext.__next__.__code__
_TEMPLATE_CODE = "<template>"  # the file name of the Python code Jinja compiles a template to


class Watched(list):
    """The messages a template reads, with where the text stood each time its loop fetched one.

    `emitted()` is the length of the text produced so far (the render consumes the template's
    output lazily, so it is exact at each fetch). `fetched_at[k]` is that length when message k
    was asked for, and fetched_at[len] when the loop found no more; `unsafe` is set by any read
    that could differ in a prefix.
    """

    def __init__(self, messages):
        super().__init__(messages)
        self.emitted = lambda: 0  # set by watched_render
        self.fetched_at: list[int] = []
        self.passes = 0
        self.unsafe = ""
        self.loop_starts: list[list[int]] = []  # per loop over the list (loop_steps.StepLoop)
        self.slices: list[tuple[int, Watched]] = []  # (k, messages[k:]) taken, watched too
        self.by_template = False  # whether the template's own code (a plain loop) iterated it

    def __iter__(self):
        self.passes += 1
        for k in range(list.__len__(self) + 1):
            # the loop's own step, not a look ahead (LoopContext._peek_next for loop.last)
            caller = sys._getframe(1).f_code
            if not k:
                self.by_template = caller.co_filename == _TEMPLATE_CODE
            if caller is not _LOOP_NEXT and caller.co_filename != _TEMPLATE_CODE:
                self.unsafe = self.unsafe or f"message {k} was fetched ahead ({caller.co_name})"
            self.fetched_at.append(self.emitted())
            if k < list.__len__(self):
                yield list.__getitem__(self, k)

    def __getitem__(self, index):
        fetched = len(self.fetched_at)
        done = fetched > list.__len__(
            self
        )  # after the loop, every prefix has only message 0 in common
        allowed = 1 if done or not fetched else fetched
        if not isinstance(index, int) or not 0 <= index < allowed:
            self.unsafe = self.unsafe or f"messages[{index!r}] read with {fetched} fetched"
        if _is_tail_slice(index):  # `set messages = messages[1:]` (Llama-3's system message)
            rest = Watched(list.__getitem__(self, index))
            rest.emitted = lambda: self.emitted()
            self.slices.append((index.start, rest))
            return rest
        return list.__getitem__(self, index)

    def __len__(self):
        self.unsafe = self.unsafe or "the number of messages was read"
        return list.__len__(self)


def _is_tail_slice(index) -> bool:
    """Whether `index` is a slice messages[k:] for some k >= 0."""
    return (
        isinstance(index, slice)
        and isinstance(index.start, int)
        and index.start >= 0
        and index.stop is None
        and index.step is None
    )


def _read_whole(name: str):
    """A list method that marks the read unsafe, then answers as the plain list would."""
    method = getattr(list, name)

    def read(self, *args, **kwargs):
        self.unsafe = self.unsafe or f"the messages were read whole ({name})"
        return method(self, *args, **kwargs)

    return read


for _name in (
    "__reversed__", "__contains__", "index", "count", "copy", "__eq__", "__ne__", "__lt__",
    "__le__", "__gt__", "__ge__", "__add__", "__mul__", "__rmul__", "__repr__",
):  # fmt: skip
    setattr(Watched, _name, _read_whole(_name))


@dataclass(frozen=True)
class Layout:
    """Where each message's loop step begins in the full render, and what follows the loop."""

    full: str
    ends: list
    """ends[k]: the length of render(messages[:k]) less its tail, for 1 <= k <= len(messages)."""
    tail: dict
    """gen -> what the template prints after its loop (True: with the generation prompt)."""

    def render(self, k: int, gen: bool) -> str:
        """render(messages[:k], add_generation_prompt=gen), exactly (module docstring)."""
        return self.full[: self.ends[k]] + self.tail[gen]

    def continues_after(self, k: int, gen: bool) -> bool:
        """Whether the full render continues with render(messages[:k], gen) as a prefix, in
        constant time: it holds full[: ends[k]] already, so only the tail is compared."""
        return self.full.startswith(self.tail[gen], self.ends[k])


def layout_of(
    watched: Watched, full: str, first_prompted: Callable[[], str], tail: str | None = None
) -> Layout | None:
    """The Layout of a watched full render (module docstring); None when the render showed that
    this row's prefixes must be rendered one by one. `first_prompted()` renders messages[:1]
    with the generation prompt, exactly; it is not called when `tail`, tail(True) for this row's
    inputs, is already known (`tail_names`)."""
    count = list.__len__(watched)
    ends = watched.fetched_at
    if watched.unsafe or watched.passes != 1 or len(ends) != count + 1 or not count:
        return None
    if tail is None:
        prompted = first_prompted()
        if not prompted.startswith(full[: ends[1]]):
            return None
        tail = prompted[ends[1] :]
    return Layout(full, ends, {False: full[ends[count] :], True: tail})


def watched_render(template: jinja2.Template, messages: Watched, inputs: dict) -> str:
    """The template's text for `inputs`, consumed piece by piece so that `messages` knows at
    each fetch how much text came before it."""
    pieces, size = [], 0
    messages.emitted = lambda: size
    for piece in template.generate(**inputs):
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def prefix_local_problem(template: jinja2.Template, source: str) -> str:
    """Why the template is not prefix-local (module docstring), or "" when it is."""
    try:
        tree = template.environment.parse(source)
    except jinja2.TemplateSyntaxError as err:
        return f"does not parse: {err.message}"
    assigned = assigned_names(tree)
    aliases = _message_names(tree)
    for name in sorted(aliases):
        if assigned[name] != (name != "messages"):  # an alias is set once, `messages` never
            return f"it sets {name} to something else than the messages"
    loops = message_loops(tree, aliases)
    if len(loops) != 1:
        return f"{len(loops)} loops over the messages at its top level, not one"
    at = loops[0]
    loop = tree.body[at]
    before, after = tree.body[:at], tree.body[at + 1 :]
    if problem := _loop_problem(loop):
        return problem
    for part in (before, [loop.test] if loop.test else [], loop.body, after):
        if problem := _messages_problem(part, aliases):
            return problem
    for part in (before, [loop.test] if loop.test else [], loop.body):
        if names_loaded(part) & {"add_generation_prompt"}:
            return "it reads add_generation_prompt before the end of its message loop"
    if late := sorted(names_loaded(after) & (set(+assigned) | aliases | {"loop"})):
        return f"after its message loop it reads {late[0]}, which the template sets"
    return ""


def tail_names(template: jinja2.Template, source: str) -> frozenset | None:
    """The names a prefix-local (or stepped, loop_steps.py) template reads after its message
    loop, when it reads no message there; None otherwise. tail(gen) is then a function of gen
    and those names' values alone (a render is deterministic, and they are names the template
    never sets), so one row's tail(True) serves every row whose values are equal, without
    rendering its first message again."""
    tree = template.environment.parse(source)
    aliases = _message_names(tree)
    loops = message_loops(tree, aliases)
    if len(loops) != 1:
        return None
    after = tree.body[loops[0] + 1 :]
    names = names_loaded(after)
    return None if names & (aliases | JINJA_RUNTIME_NAMES) else frozenset(names)


JINJA_RUNTIME_NAMES = frozenset({"self", "caller", "varargs", "kwargs", "super", "loop"})
"""Names Jinja gives a render itself, not inputs: `self.block()` renders a block of the template,
which may read the messages."""


def message_loops(tree: nodes.Template, aliases: set[str]) -> list[int]:
    """Where the top level loops over `messages` or an alias of it."""
    return [
        i
        for i, node in enumerate(tree.body)
        if isinstance(node, nodes.For)
        and isinstance(node.iter, nodes.Name)
        and node.iter.name in aliases
    ]


def _message_names(tree: nodes.Template) -> set[str]:
    """`messages` and the names the top level sets to it (`{% set loop_messages = messages %}`)."""
    names = {"messages"}
    for node in tree.body:
        if _sets_alias(node, names):
            names.add(node.target.name)
    return names


def _sets_alias(node, names: set[str]) -> bool:
    """Whether `node` is `{% set x = m %}` with m one of `names`."""
    return (
        isinstance(node, nodes.Assign)
        and isinstance(node.target, nodes.Name)
        and isinstance(node.node, nodes.Name)
        and node.node.name in names
    )


def assigned_names(tree: nodes.Template) -> Counter:
    """How often the template binds each name: set, set blocks, loop targets, macros, imports."""
    names = Counter()
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock, nodes.For)):
        target = node.target
        names.update([target.name] if isinstance(target, nodes.Name) else [])
        names.update(n.name for n in target.find_all(nodes.Name))
    for node in tree.find_all((nodes.Macro, nodes.CallBlock, nodes.FromImport, nodes.Import)):
        if isinstance(node, nodes.Macro):
            names[node.name] += 1
        elif isinstance(node, nodes.Import):
            names[node.target] += 1
        elif isinstance(node, nodes.FromImport):
            names.update(n if isinstance(n, str) else n[1] for n in node.names)
        else:
            names["caller"] += 1
    return names


def names_loaded(part) -> set[str]:
    return {
        n.name
        for node in part
        for n in _walk(node)
        if isinstance(n, nodes.Name) and n.ctx == "load"
    }


def _walk(node):
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _messages_problem(part, aliases: set[str]) -> str:
    """A read of the messages other than by an index, or ""."""
    for node in part:
        if _sets_alias(node, aliases):
            continue
        allowed = set()
        for n in _walk(node):
            if isinstance(n, nodes.Getitem) and isinstance(n.node, nodes.Name):
                allowed.add(id(n.node))  # an index goes through Watched.__getitem__
        for n in _walk(node):
            if (
                isinstance(n, nodes.Name)
                and n.ctx == "load"
                and n.name in aliases
                and id(n) not in allowed
            ):
                return f"it reads {n.name} otherwise than by an index (line {n.lineno})"
    return ""


def _loop_problem(loop: nodes.For) -> str:
    """What makes the message loop's steps unwatchable, or "": an else block, recursion, a use of
    its `loop` other than reading an attribute (inner loops have their own; an attribute that
    looks ahead is seen by Watched), or any read of `loop` when the loop filters the messages."""
    if loop.else_ or loop.recursive:
        return "its message loop has an else block or is recursive"
    if loop.test is not None and _reads_loop(loop.body):
        # LoopContext then peeks through Jinja's filter function, in the template's own code,
        # where the watched list cannot tell a look ahead (loop.last) from the loop's own step
        return "its message loop filters the messages and reads `loop`"
    for node in loop.body:
        for n in _loop_uses(node):
            return f"its message loop uses {n} (line {node.lineno})"
    return ""


def _reads_loop(body: list) -> bool:
    """Whether the message loop's body reads its `loop` at all (outside inner loops)."""
    return any(_names_of_loop(node) for node in body)


def _names_of_loop(node) -> bool:
    if isinstance(node, nodes.For):  # its body has a `loop` of its own
        parts = [node.iter, node.test, *node.else_]
        return any(_names_of_loop(part) for part in parts if part is not None)
    if isinstance(node, nodes.Name) and node.name == "loop":
        return True
    return any(_names_of_loop(child) for child in node.iter_child_nodes())


def _loop_uses(node):
    """The uses of `loop` under `node` other than `loop.attribute`, outside inner loops."""
    if isinstance(node, nodes.For):  # its body has a `loop` of its own
        for part in (node.iter, node.test, *node.else_):
            if part is not None:
                yield from _loop_uses(part)
        return
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "loop"
    ):
        return
    if isinstance(node, nodes.Name) and node.name == "loop":
        yield "loop as a value"
        return
    for child in node.iter_child_nodes():
        yield from _loop_uses(child)
