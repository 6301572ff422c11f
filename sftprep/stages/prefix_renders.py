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

A template is prefix-local when (checked on its syntax tree, `prefix_local_problem`):
- its one loop over `messages` (or a name set to it) is a statement of the template's top level,
  with no `else` and not recursive, and `loop` in it is used only for index, index0, first,
  previtem, cycle and depth (`loop.last`, `length`, `revindex`, `nextitem` look ahead);
- `messages` is otherwise only read as `messages[0]` (before or inside the loop: every prefix
  used holds message 0);
- `add_generation_prompt` is read only after the loop, and what comes after the loop reads only
  names the template never sets (so no state the loop left behind, like `ns.is_tool`).
During the render a watched list checks it again (`Watched`): no length asked, no index past the
messages fetched so far, one pass of the loop over every message; anything else and the row's
prefixes are rendered one by one, as before. tail(gen) is taken from the exact render of the first
message, and the full render must end with tail(False), or the row falls back too.
SmolLM2's and Llama-3's templates are prefix-local; Qwen3's is not (it looks for the last user
query over the whole list, and renders the last assistant turn otherwise), so it keeps the exact
per-prefix renders.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import jinja2
import jinja2.nodes as nodes

LOOP_ATTRIBUTES_LOOKING_BACK = frozenset(
    {"index", "index0", "first", "previtem", "cycle", "changed", "depth", "depth0"}
)


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

    def __iter__(self):
        self.passes += 1
        for k in range(list.__len__(self)):
            self.fetched_at.append(self.emitted())
            yield list.__getitem__(self, k)
        self.fetched_at.append(self.emitted())

    def __getitem__(self, index):
        fetched = max(len(self.fetched_at), 1)
        if not isinstance(index, int) or not 0 <= index < fetched:
            self.unsafe = self.unsafe or f"messages[{index!r}] read with {fetched} fetched"
        return list.__getitem__(self, index)

    def __len__(self):
        self.unsafe = self.unsafe or "the number of messages was read"
        return list.__len__(self)


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


def layout_of(watched: Watched, full: str, first_prompted: Callable[[], str]) -> Layout | None:
    """The Layout of a watched full render (module docstring); None when the render showed that
    this row's prefixes must be rendered one by one. `first_prompted()` renders messages[:1]
    with the generation prompt, exactly."""
    count = list.__len__(watched)
    ends = watched.fetched_at
    if watched.unsafe or watched.passes != 1 or len(ends) != count + 1 or not count:
        return None
    prompted = first_prompted()
    if not prompted.startswith(full[: ends[1]]):
        return None
    return Layout(full, ends, {False: full[ends[count] :], True: prompted[ends[1] :]})


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
    assigned = _assigned_names(tree)
    aliases = _message_names(tree)
    for name in sorted(aliases):
        if assigned[name] != (name != "messages"):  # an alias is set once, `messages` never
            return f"it sets {name} to something else than the messages"
    loops = [
        i
        for i, node in enumerate(tree.body)
        if isinstance(node, nodes.For)
        and isinstance(node.iter, nodes.Name)
        and node.iter.name in aliases
    ]
    if len(loops) != 1:
        return f"{len(loops)} loops over the messages at its top level, not one"
    at = loops[0]
    loop = tree.body[at]
    if loop.else_ or loop.recursive:
        return "its message loop has an else block or is recursive"
    before, after = tree.body[:at], tree.body[at + 1 :]
    if problem := _loop_problem(loop.body):
        return problem
    for part in (before, [loop.test] if loop.test else [], loop.body, after):
        if problem := _messages_problem(part, aliases):
            return problem
    for part in (before, [loop.test] if loop.test else [], loop.body):
        if _names_loaded(part) & {"add_generation_prompt"}:
            return "it reads add_generation_prompt before the end of its message loop"
    if late := sorted(_names_loaded(after) & (set(+assigned) | aliases | {"loop"})):
        return f"after its message loop it reads {late[0]}, which the template sets"
    return ""


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


def _assigned_names(tree: nodes.Template) -> Counter:
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


def _names_loaded(part) -> set[str]:
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
    """A read of the messages other than `messages[0]`, or ""."""
    for node in part:
        if _sets_alias(node, aliases):
            continue
        allowed = set()
        for n in _walk(node):
            if (
                isinstance(n, nodes.Getitem)
                and isinstance(n.node, nodes.Name)
                and n.node.name in aliases
                and isinstance(n.arg, nodes.Const)
                and n.arg.value == 0
            ):
                allowed.add(id(n.node))
        for n in _walk(node):
            if (
                isinstance(n, nodes.Name)
                and n.ctx == "load"
                and n.name in aliases
                and id(n) not in allowed
            ):
                return f"it reads {n.name} otherwise than as {n.name}[0] (line {n.lineno})"
    return ""


def _loop_problem(body: list) -> str:
    """A use of the message loop's `loop` that looks ahead, or "" (inner loops have their own)."""
    for node in body:
        for n in _loop_uses(node):
            return f"its message loop reads {n} (line {node.lineno}), which looks ahead"
    return ""


def _loop_uses(node):
    """The uses of `loop` under `node` that are not LOOP_ATTRIBUTES_LOOKING_BACK, outside inner loops."""
    if isinstance(node, nodes.For):  # its body has a `loop` of its own
        for part in (node.iter, node.test, *node.else_):
            if part is not None:
                yield from _loop_uses(part)
        return
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        if node.node.name == "loop" and node.attr not in LOOP_ATTRIBUTES_LOOKING_BACK:
            yield f"loop.{node.attr}"
        if node.node.name == "loop":
            return
    if isinstance(node, nodes.Name) and node.name == "loop":
        yield "loop as a value"
        return
    for child in node.iter_child_nodes():
        yield from _loop_uses(child)
