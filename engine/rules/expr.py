"""The `if:` expression language of rules (SPEC §3), compiled once to plain Python callables.

Rule authors write Python-looking expressions (`lifetime_spend >= 5000`,
`days_since(last_active) > 30`, `event.category in ["shoes", "bags"]`). The text is parsed
with `ast.parse(mode="eval")`, every node is checked against a whitelist, and Python source
is generated from the checked tree and compiled once. Nothing the author wrote is evaluated
directly, so an expression can never run arbitrary code: it can only read aggregates, the
event, the profile and the clock, and call the functions listed in `FUNCTIONS`.

Speed (hot-path-measurements §4): the result is an ordinary function whose aggregate readers
and helpers are closure cells, so a call costs what a hand-written lambda costs; no name is
looked up by string at evaluation time.

Runtime contract of every compiled `fn(state, event, now_ms)`:
- it never raises on bad data: TypeError, ValueError, ZeroDivisionError, AttributeError,
  KeyError, IndexError and OverflowError make the whole expression return None, which
  callers treat as false (so `event.amount > 10` with no `amount` is simply not true);
- `event` may be None (a timer fired without an event): every `event.*` read is then None;
- a missing property or profile attribute reads as None;
- `x["key"]` / `x[0]` is a safe get: the value when `x` is a mapping holding the key, or a
  list/tuple/str and the index is in range; None otherwise (never 0: write
  `coalesce(interest["shoes"], 0)` when absent should count as zero);
- the one exception: an aggregate kept per key (`count/sum … by:`) takes any expression as its
  key (`views_by_sku[event.sku]`), and a key it does not hold reads 0 (no events, no count);
- `*` and `%` accept numbers only, so event data can never make the engine build a huge
  string (`"x" * 10**12`) or run printf formatting.
"""

from __future__ import annotations

import ast
import keyword
import math
import re
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NoReturn, cast

import msgspec

from engine.actions.numbers import without_float_noise
from engine.actions.placeholders import PlaceholderError, split_template
from engine.actions.placeholders import skip_string as _skip_string
from engine.core.times import parse_ts
from engine.errors import EngineError
from engine.events.model import Event
from engine.rules.errors import did_you_mean
from engine.state.customer import CustomerState

__all__ = [
    "FUNCTIONS", "RESERVED_NAMES", "CompiledExpr", "Env", "ExprError", "compile_expr", "compile_template",
    "reserved_name_problem",
]


class ExprError(EngineError):
    """A rejected expression or template.

    `col` is the 0-based character offset into the text given to `compile_expr` /
    `compile_template`, so the rules loader can point at the exact spot in the YAML value.
    """

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


AggregateReader = Callable[[CustomerState, int], Any]
ExprFn = Callable[[CustomerState, Event | None, int], Any]

_KEYWORD_CONSTANTS = {"true": "True", "false": "False", "null": "None"}
_EVENT_FIELDS = frozenset({"type", "ts", "customer_id", "event_id"})
FUNCTIONS = (
    "abs", "coalesce", "days_since", "hours_since", "len", "lower",
    "max", "min", "minutes_since", "round", "top",
)
RESERVED_NAMES = frozenset(
    {"now", "event", "profile", *_KEYWORD_CONSTANTS, *_KEYWORD_CONSTANTS.values(), *FUNCTIONS, *keyword.kwlist}
)
"""The names an aggregate cannot take, because expressions already mean something by them; the
one list the loader and `Env` both check. Python's keywords are in it as well: expressions
compile to Python, where an aggregate called `class` or `lambda` could not be referred to."""


def reserved_name_problem(name: str) -> str | None:
    """What is wrong with `name` as an aggregate's name in expressions, or None when nothing is.

    The rules loader reports it at the aggregate's file:line, and the compiler does for a
    `RuleSet` built by hand, so a clash never surfaces as `Env`'s bare ValueError."""
    if not name.isidentifier():
        return f"'{name}' is not usable in `if:` expressions: use letters, digits and _"
    if name in RESERVED_NAMES:
        return f"'{name}' is reserved in `if:` expressions: choose another name"
    return None


class Env(msgspec.Struct, frozen=True):
    """The names an expression may use besides `now`, `event.*`, `profile.*` and `FUNCTIONS`.

    `aggregates` maps an aggregate name to its reader `reader(state, now_ms)`, which returns
    the value at time `now_ms` (a sliding-window count, a dict of decayed counts, ...).
    Names must be identifiers outside `RESERVED_NAMES`, otherwise an expression could not say
    which one it means: that is a ValueError here (the loader reports it at file:line first).
    """

    aggregates: Mapping[str, AggregateReader] = {}
    # Optional fast paths: `top(name)` compiles to `tops[name](state, now)` instead of building
    # the aggregate's whole value first (a decayed count's top key needs no decay arithmetic).
    tops: Mapping[str, AggregateReader] = {}
    # Aggregates kept per key (`count/sum … by:`): `name[key]` compiles to `keyed[name](state, now,
    # key)`, where the key may be any expression (`views_by_sku[event.sku]`) and a missing key is 0.
    keyed: Mapping[str, Callable[[CustomerState, int, Any], Any]] = {}

    def __post_init__(self) -> None:
        for name in self.aggregates:
            problem = reserved_name_problem(name) if isinstance(name, str) else f"{name!r} is not a name"
            if problem is not None:
                raise ValueError(f"aggregate name {problem}")


class CompiledExpr(msgspec.Struct, frozen=True):
    """A compiled expression or template and what it reads.

    The read sets let the rules compiler index rules by the data they depend on and check
    that templates only read properties a timer keeps (`Timer.ctx`).
    """

    fn: ExprFn                       # fn(state, event_or_None, now_ms); never raises on bad data
    source: str                      # the text as written in the rule
    aggregates: frozenset[str]       # aggregate names read
    event_props: frozenset[str]      # event.<prop> property names read (not the built-in fields)
    profile_attrs: frozenset[str]    # profile.<attr> names read


# ---------------------------------------------------------------------------------------------
# Runtime helpers, bound into the compiled functions as closure cells.

_ERRORS = (TypeError, ValueError, ZeroDivisionError, AttributeError, KeyError, IndexError, OverflowError)
_NUMBERS = frozenset({int, float, bool})
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MS_PER = {"days_since": 86_400_000, "hours_since": 3_600_000, "minutes_since": 60_000}


@lru_cache(maxsize=4096)
def _text_ms(text: str) -> int:
    """Profile dates arrive as strings and are read on every evaluation: parse each once."""
    if _DATE_ONLY.fullmatch(text):  # a calendar date means its midnight, UTC
        return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    return parse_ts(text)


def _since(unit_ms: int) -> Callable[[Any, int], float | None]:
    def since(x: Any, now: int) -> float | None:
        if x is None:
            return None
        kind = type(x)
        if kind is int or kind is float:
            return (now - x) / unit_ms
        if kind is str:
            return (now - _text_ms(x)) / unit_ms
        raise TypeError("expected epoch ms or an RFC 3339 / YYYY-MM-DD string")

    return since


def _top(d: Any) -> Any:
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise TypeError("top() needs a mapping")
    if not d:
        return None
    best = max(d.values())
    return min(k for k, v in d.items() if v == best)  # ties -> smallest key: deterministic


def _lower(s: Any) -> str | None:
    if s is None:
        return None
    if type(s) is str:
        return s.lower()
    raise TypeError("lower() needs a string")


def _coalesce(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _item(x: Any, key: Any) -> Any:
    if type(x) is dict:
        return x.get(key)
    if isinstance(x, Mapping):
        return x.get(key)
    if type(key) is int and isinstance(x, (list, tuple, str)) and -len(x) <= key < len(x):
        return x[key]
    return None


def _mul(a: Any, b: Any) -> Any:
    if type(a) in _NUMBERS and type(b) in _NUMBERS:
        return a * b
    raise TypeError("'*' needs numbers")


def _mod(a: Any, b: Any) -> Any:
    if type(a) in _NUMBERS and type(b) in _NUMBERS:
        return a % b
    raise TypeError("'%' needs numbers")


def _text(v: Any) -> str:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is str:
        return v
    try:
        return str(v)
    except _ERRORS:
        return ""


_FUNCTION_IMPLS: dict[str, Any] = {
    "abs": abs, "len": len, "max": max, "min": min, "round": round,
    "coalesce": _coalesce, "lower": _lower, "top": _top,
    "days_since": _since(_MS_PER["days_since"]),
    "hours_since": _since(_MS_PER["hours_since"]),
    "minutes_since": _since(_MS_PER["minutes_since"]),
}
# name -> (min args, max args or None)
_ARITY = {
    "abs": (1, 1), "len": (1, 1), "lower": (1, 1), "top": (1, 1),
    "days_since": (1, 1), "hours_since": (1, 1), "minutes_since": (1, 1),
    "round": (1, 2), "min": (1, None), "max": (1, None), "coalesce": (1, None),
}
_FUNCTION_LIST = ", ".join(FUNCTIONS)

# ---------------------------------------------------------------------------------------------
# Compiler: checked AST -> Python source.

_MAX_DEPTH = 60  # keeps generated parentheses well under CPython's limit of 200

_FORBIDDEN = {
    ast.Lambda: "lambda functions are not allowed",
    ast.NamedExpr: "assignments (':=') are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed (payload templates are plain strings with {...})",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed; write a list, e.g. event.category in [\"shoes\", \"bags\"]",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.Slice: "slices are not allowed; use a constant key or index, e.g. x[0]",
}
_NATIVE_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Div: "/", ast.FloorDiv: "//"}
_HELPER_BINOPS = {ast.Mult: "_mul", ast.Mod: "_mod"}
_BINOP_HINTS = {
    ast.BitAnd: "'&' is not supported; write 'and'",
    ast.BitOr: "'|' is not supported; write 'or'",
    ast.Pow: "'**' is not supported",
    ast.BitXor: "'^' is not supported",
    ast.LShift: "'<<' is not supported",
    ast.RShift: "'>>' is not supported",
    ast.MatMult: "'@' is not supported",
}
_COMPARE_OPS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in",
}


class _Compiler:
    """Walks one parsed expression; collects the helpers it binds and the names it reads."""

    def __init__(self, text: str, env: Env, base: int) -> None:
        self.env = env
        self.base = base  # offset of `text` inside the string the user sees (templates, stripping)
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
        self.lines = text
        self.bindings: dict[str, Any] = {}
        self.aggregates: set[str] = set()
        self.event_props: set[str] = set()
        self.profile_attrs: set[str] = set()

    # -- errors -------------------------------------------------------------------------------

    def col(self, node: ast.AST, at_attr: bool = False) -> int:
        """AST columns are UTF-8 byte offsets within a line; ExprError wants characters."""
        if at_attr:  # point at the name after the dot, not at the start of `a.b`
            assert isinstance(node, ast.Attribute)  # at_attr is only passed for ast.Attribute nodes
            lineno, byte_col = node.end_lineno or 1, (node.end_col_offset or 0) - len(node.attr.encode("utf-8"))
        else:
            lineno, byte_col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        start = self.line_starts[min(max(lineno, 1), len(self.line_starts)) - 1]
        prefix = self.lines[start:].encode("utf-8", "surrogatepass")[: max(byte_col, 0)].decode("utf-8", "ignore")
        return self.base + start + len(prefix)

    def fail(self, node: ast.AST, message: str, at_attr: bool = False) -> NoReturn:
        raise ExprError(message, self.col(node, at_attr))

    # -- emit ---------------------------------------------------------------------------------

    def bind(self, name: str, value: Any) -> str:
        self.bindings[name] = value
        return name

    def emit(self, node: ast.AST, depth: int = 0) -> str:
        """Python source for `node`, always a self-contained (parenthesised or atomic) term."""
        if depth > _MAX_DEPTH:
            self.fail(node, "expression is nested too deeply")
        method = getattr(self, "emit_" + type(node).__name__, None)
        if method is None:
            self.fail(node, _FORBIDDEN.get(type(node), f"{type(node).__name__} is not allowed in an expression"))
        return method(node, depth + 1)

    def emit_Constant(self, node: ast.Constant, depth: int) -> str:
        v = node.value
        if v is None or isinstance(v, (bool, int, str)):
            return repr(v)
        if isinstance(v, float):
            return "1e999" if math.isinf(v) else repr(v)
        if isinstance(v, bytes):
            self.fail(node, "bytes literals are not allowed; write a plain string")
        if isinstance(v, complex):
            self.fail(node, "complex numbers are not allowed")
        self.fail(node, f"{v!r} is not allowed in an expression")

    def emit_Name(self, node: ast.Name, depth: int) -> str:
        name = node.id
        if name in _KEYWORD_CONSTANTS:
            return _KEYWORD_CONSTANTS[name]
        if name == "now":
            return "now"
        if name in self.env.aggregates:
            self.aggregates.add(name)
            return self.bind("_a_" + name, self.env.aggregates[name]) + "(st, now)"
        if name in ("event", "profile"):
            example = "event.sku" if name == "event" else "profile.first_name"
            self.fail(node, f"'{name}' cannot be used on its own; write {name}.<name>, e.g. {example}")
        if name in _FUNCTION_IMPLS:
            self.fail(node, f"'{name}' is a function; call it, e.g. {name}(x)")
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are not allowed: '{name}'")
        known = [*self.env.aggregates, "now", "event", "profile"]
        self.fail(node, f"unknown aggregate '{name}'{did_you_mean(name, known)}")

    def emit_Attribute(self, node: ast.Attribute, depth: int) -> str:
        owner = node.value
        if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id in ("event", "profile"):
            inner = f"{owner.value.id}.{owner.attr}"
            self.fail(node, f"only one level of access is allowed: write {inner} (nested values: {inner}[\"{node.attr}\"])", at_attr=True)
        if not (isinstance(owner, ast.Name) and owner.id in ("event", "profile")):
            self.emit(owner, depth)  # report the first wrong step of a chain like ().__class__.__bases__
            if isinstance(owner, ast.Name) and owner.id in self.env.aggregates:
                self.fail(node, f"write {owner.id}[\"{node.attr}\"] to read a key", at_attr=True)
            self.fail(node, "attribute access is only allowed as event.<property> or profile.<attribute>", at_attr=True)
        if node.attr.startswith("__"):
            self.fail(node, f"'{owner.id}.{node.attr}' is not allowed: names starting with '__' are reserved", at_attr=True)
        if owner.id == "profile":
            return self.profile_read(node.attr)
        if node.attr in _EVENT_FIELDS:
            return f"(None if ev is None else ev.{node.attr})"
        if node.attr == "properties":
            self.fail(node, "write event.<property>, e.g. event.sku, not event.properties", at_attr=True)
        return self.event_read(node.attr)

    def event_read(self, prop: str) -> str:
        self.event_props.add(prop)
        return f"(None if ev is None else ev.properties.get({prop!r}))"

    def profile_read(self, attr: str) -> str:
        self.profile_attrs.add(attr)
        return f"st.profile.get({attr!r})"

    def emit_Subscript(self, node: ast.Subscript, depth: int) -> str:
        owner, key = node.value, node.slice
        if isinstance(key, ast.Slice):
            self.fail(key, _FORBIDDEN[ast.Slice])
        if isinstance(owner, ast.Name) and owner.id in ("event", "profile"):
            # event["first-name"] reads a property whose name is not an identifier
            if isinstance(key, ast.Constant) and type(key.value) is str:
                return self.event_read(key.value) if owner.id == "event" else self.profile_read(key.value)
            example = key.id if isinstance(key, ast.Name) else ("sku" if owner.id == "event" else "first_name")
            what = "property" if owner.id == "event" else "attribute"
            self.fail(node, f"write {owner.id}.<{what}>, e.g. {owner.id}.{example}")
        if isinstance(owner, ast.Name) and owner.id in self.env.keyed:
            self.aggregates.add(owner.id)
            reader = self.bind("_k_" + owner.id, self.env.keyed[owner.id])
            return f"{reader}(st, now, {self.emit(key, depth)})"
        constant = _constant_key(key)
        if constant is None:
            self.fail(key, 'a key must be a constant string or integer, e.g. interest["shoes"]')
        return f"{self.bind('_item', _item)}({self.emit(owner, depth)}, {constant!r})"

    def emit_BoolOp(self, node: ast.BoolOp, depth: int) -> str:
        op = " and " if isinstance(node.op, ast.And) else " or "
        return "(" + op.join(self.emit(v, depth) for v in node.values) + ")"

    def emit_UnaryOp(self, node: ast.UnaryOp, depth: int) -> str:
        if isinstance(node.op, ast.Not):
            return f"(not {self.emit(node.operand, depth)})"
        if isinstance(node.op, ast.USub):
            return f"(-{self.emit(node.operand, depth)})"
        if isinstance(node.op, ast.UAdd):
            return f"(+{self.emit(node.operand, depth)})"
        self.fail(node, "'~' is not supported; write 'not'")

    def emit_BinOp(self, node: ast.BinOp, depth: int) -> str:
        kind = type(node.op)
        if kind in _NATIVE_BINOPS:
            return f"({self.emit(node.left, depth)} {_NATIVE_BINOPS[kind]} {self.emit(node.right, depth)})"
        if kind in _HELPER_BINOPS:
            helper = _HELPER_BINOPS[kind]
            self.bind(helper, _mul if kind is ast.Mult else _mod)
            return f"{helper}({self.emit(node.left, depth)}, {self.emit(node.right, depth)})"
        self.fail(node, _BINOP_HINTS.get(kind, "operator not supported"))

    def emit_Compare(self, node: ast.Compare, depth: int) -> str:
        parts = [self.emit(node.left, depth)]
        for op, right in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE_OPS:
                self.fail(node, "'is' is not supported; write == or != (e.g. event.coupon == null)")
            parts.append(_COMPARE_OPS[type(op)])
            parts.append(self.emit(right, depth))
        return "(" + " ".join(parts) + ")"

    def emit_IfExp(self, node: ast.IfExp, depth: int) -> str:
        return f"({self.emit(node.body, depth)} if {self.emit(node.test, depth)} else {self.emit(node.orelse, depth)})"

    def emit_List(self, node: ast.List, depth: int) -> str:
        return "[" + ", ".join(self.emit(e, depth) for e in node.elts) + "]"

    def emit_Tuple(self, node: ast.Tuple, depth: int) -> str:
        items = [self.emit(e, depth) for e in node.elts]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"

    def emit_Call(self, node: ast.Call, depth: int) -> str:
        func = node.func
        if isinstance(func, ast.Attribute):
            self.fail(node, f"methods cannot be called; the functions are: {_FUNCTION_LIST}")
        if not isinstance(func, ast.Name):
            self.fail(node, f"only named functions can be called: {_FUNCTION_LIST}")
        name = func.id
        if name not in _FUNCTION_IMPLS:
            self.fail(func, f"unknown function '{name}'{did_you_mean(name, FUNCTIONS)}; the functions are: {_FUNCTION_LIST}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail(arg, _FORBIDDEN[ast.Starred])
        if node.keywords:
            self.fail(node.keywords[0].value, f"{name}() takes no keyword arguments")
        low, high = _ARITY[name]
        n = len(node.args)
        if n < low or (high is not None and n > high):
            want = str(low) if low == high else (f"{low} or {high}" if high else f"at least {low}")
            self.fail(node, f"{name}() takes {want} argument{'s' if want != '1' else ''}, got {n}")
        if name == "round" and n == 2:
            digits = _constant_key(node.args[1])
            if type(digits) is not int or not -15 <= digits <= 15:
                self.fail(node.args[1], "round(x, n): n must be a constant integer between -15 and 15")
        if name == "top" and isinstance(node.args[0], ast.Name) and node.args[0].id in self.env.tops:
            agg = node.args[0].id
            self.aggregates.add(agg)
            return self.bind("_t_" + agg, self.env.tops[agg]) + "(st, now)"
        args = [self.emit(a, depth) for a in node.args]
        if name in _MS_PER:
            args.append("now")
        return self.bind("_f_" + name, _FUNCTION_IMPLS[name]) + "(" + ", ".join(args) + ")"


def _constant_key(node: ast.AST) -> str | int | None:
    """A subscript key or round() digits: a str/int literal, or a negated int literal."""
    if isinstance(node, ast.Constant) and type(node.value) in (str, int):
        return cast("str | int", node.value)
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
        return -node.operand.value
    return None


# ---------------------------------------------------------------------------------------------
# Parsing and hints.

_EVENT_DOTDOT = re.compile(r"\b(event|profile)\s*\.\s*\.\s*([A-Za-z_]\w*)?")


def _syntax_hint(text: str) -> tuple[int, str] | None:
    """Spot habits from other languages that Python's own message would not explain."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            i = _skip_string(text, i)
            continue
        pair = text[i : i + 2]
        if pair == "&&":
            return i, "write 'and' instead of '&&'"
        if pair == "||":
            return i, "write 'or' instead of '||'"
        if pair in ("==", "!=", "<=", ">=", ":="):
            i += 2
            continue
        if c == "!":
            return i, "write 'not' instead of '!'"
        if c == "=":
            return i, "write '==' to compare ('=' is not allowed)"
        m = _EVENT_DOTDOT.match(text, i) if c in "ep" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if m:
            what = "property" if m.group(1) == "event" else "attribute"
            return i, f"write {m.group(1)}.<{what}>, e.g. {m.group(1)}.{m.group(2) or 'sku'}"
        i += 1
    return None


def _parse(text: str, base: int) -> tuple[ast.expr, int]:
    """Parse one expression; returns the body and the offset of the stripped text in `text`."""
    stripped = text.lstrip()
    lead = len(text) - len(stripped)
    if not stripped.strip():
        raise ExprError("empty expression", base)
    if "\x00" in stripped:
        raise ExprError("expression contains a NUL character", base + text.index("\x00"))
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in a literal: not the author's concern here
            warnings.simplefilter("ignore")
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as e:
        hint = _syntax_hint(stripped)
        if hint is not None:
            raise ExprError(hint[1], base + lead + hint[0]) from None
        raise ExprError(f"syntax error: {e.msg}", base + lead + _syntax_col(stripped, e)) from None
    except (ValueError, MemoryError, RecursionError):  # surrogates; parser stack overflow
        raise ExprError("expression cannot be parsed (nested too deeply or invalid characters)", base + lead) from None
    return tree.body, lead


def _syntax_col(text: str, e: SyntaxError) -> int:
    """SyntaxError positions are 1-based characters within a line; make them an offset.
    Offset 0 is how CPython reports an expression that stops too early: point at its end."""
    if not e.offset:
        return len(text.rstrip())
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    line = min(max(e.lineno or 1, 1), len(starts))
    return min(starts[line - 1] + max((e.offset or 1) - 1, 0), len(text))


def _compile_source(text: str, env: Env, base: int) -> tuple[str, _Compiler, ast.expr]:
    body, lead = _parse(text, base)
    compiler = _Compiler(text[lead:], env, base + lead)
    try:
        return compiler.emit(body), compiler, body
    except RecursionError:
        raise ExprError("expression is nested too deeply", base + lead) from None


def _passes_through(body: ast.expr) -> bool:
    """`event.x` or `profile.x`: a value as it came in, whose digits a payload keeps as they are."""
    return isinstance(body, ast.Attribute) and isinstance(body.value, ast.Name) and body.value.id in ("event", "profile")


_NEVER_ROUNDED_CALLS = frozenset({"len", "lower"})   # an int, a str or None, whatever the arguments
_ONE_OF_THE_ARGUMENTS = frozenset({"abs", "coalesce"})   # their value is (the magnitude of) an argument


def _may_round(node: ast.expr) -> bool:
    """Whether `without_float_noise` can change what this (checked) expression yields: False only
    when its shape alone makes it something other than a float, a dict or a list (a comparison,
    text, a tuple, `len()`...), so a template need not ask every value again. True when the value
    decides (aggregates, event and profile reads, arithmetic on them)."""
    if isinstance(node, ast.Constant):
        return type(node.value) is float
    if isinstance(node, ast.Name):
        return node.id not in _KEYWORD_CONSTANTS and node.id != "now"
    if isinstance(node, ast.Attribute):   # inside a larger expression, or a built-in field of the event
        return not (isinstance(node.value, ast.Name) and node.value.id == "event" and node.attr in _EVENT_FIELDS)
    if isinstance(node, (ast.Compare, ast.Tuple)):   # a bool; a tuple is not looked into
        return False
    if isinstance(node, ast.UnaryOp):
        return not isinstance(node.op, ast.Not) and _may_round(node.operand)
    if isinstance(node, ast.BoolOp):   # one of its operands
        return any(_may_round(v) for v in node.values)
    if isinstance(node, ast.IfExp):
        return _may_round(node.body) or _may_round(node.orelse)
    if isinstance(node, ast.BinOp):   # `/` makes a float of ints; the others keep their operands' kinds
        return isinstance(node.op, ast.Div) or _may_round(node.left) or _may_round(node.right)
    if isinstance(node, ast.List):
        return any(_may_round(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in _NEVER_ROUNDED_CALLS or (name == "round" and len(node.args) == 1):   # round(x): an int
            return False
        if name in _ONE_OF_THE_ARGUMENTS:
            return any(_may_round(a) for a in node.args)
    return True   # subscripts, the other functions (min/max of one argument yield one of its items)


def _build(body: str, bindings: dict[str, Any], source: str) -> ExprFn:
    """exec the generated factory once, in a namespace with no builtins, and bind the
    helpers as closure cells: evaluation then does no name lookup by string."""
    bindings = {"_errors": _ERRORS, **bindings}
    code = f"def _factory({', '.join(bindings)}):\n    def _expr(st, ev, now):\n{body}\n    return _expr\n"
    namespace: dict[str, Any] = {"__builtins__": {}}
    try:
        exec(compile(code, "<expr>", "exec"), namespace)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # should be unreachable after the checks
        raise ExprError("expression is too complex to compile", 0) from None
    fn = namespace["_factory"](**bindings)
    fn.__qualname__ = fn.__name__ = "expr"
    fn.__doc__ = source
    return fn


def _guarded(expr_source: str, indent: str, target: str | None) -> str:
    """A try block: `return <expr>` (or `target = <expr>`), None on a data error."""
    do = f"return {expr_source}" if target is None else f"{target} = {expr_source}"
    fallback = "return None" if target is None else f"{target} = None"
    return f"{indent}try:\n{indent}    {do}\n{indent}except _errors:\n{indent}    {fallback}"


def compile_expr(text: str, env: Env) -> CompiledExpr:
    """Compile an `if:` expression once; the returned `fn(state, event, now_ms)` runs per event.

    Raises ExprError (with the column) for anything outside the language.
    """
    if not isinstance(text, str):
        raise ExprError(f"an expression must be a string, got {type(text).__name__}", 0)
    source, c, _ = _compile_source(text, env, 0)
    fn = _build(_guarded(source, " " * 8, None), c.bindings, text)
    return CompiledExpr(fn, text, frozenset(c.aggregates), frozenset(c.event_props), frozenset(c.profile_attrs))


def compile_template(value: Any, env: Env) -> CompiledExpr:
    """Compile a payload value of a rule once.

    - not a string: the value itself, as is (callers must not mutate it);
    - exactly `"{expr}"`: the typed value of the expression (`"{event.cart_value}"` -> 129.8);
    - otherwise: the text with each `{expr}` interpolated (None -> "", booleans -> true/false),
      a failing piece renders as "" instead of failing the whole payload.
    A float an expression computes (an aggregate, arithmetic) is rendered without binary noise
    (`engine.actions.numbers`: `{lifetime_spend}` -> 1108.67, not 1108.6699999999998); a plain
    `event.x` / `profile.x` keeps the value as it came in. Which pieces can hold such a float is
    decided here, from their shape (`_may_round`): rendering rounds only those.
    Expressions use the `if:` language; ExprError columns are offsets into the whole string.
    """
    if not isinstance(value, str):
        fn = _build(" " * 8 + "return _value", {"_value": value}, repr(value))
        return CompiledExpr(fn, repr(value), frozenset(), frozenset(), frozenset())
    try:
        parts = list(split_template(value))
    except PlaceholderError as e:
        raise ExprError(e.message, e.col) from None
    bindings: dict[str, Any] = {}
    aggregates: set[str] = set()
    props: set[str] = set()
    attrs: set[str] = set()
    lines: list[str] = []
    pieces: list[str] = []
    for k, part in enumerate(parts):
        if isinstance(part, str):
            pieces.append(repr(part))
            continue
        offset, inner = part
        source, c, body = _compile_source(inner, env, offset)
        if not _passes_through(body) and _may_round(body):
            source = f"_clean({source})"
            bindings["_clean"] = without_float_noise
        bindings.update(c.bindings)
        aggregates |= c.aggregates
        props |= c.event_props
        attrs |= c.profile_attrs
        if len(parts) == 1:
            lines.append(_guarded(source, " " * 8, None))
            break
        lines.append(_guarded(source, " " * 8, f"_v{k}"))
        pieces.append(f"_text(_v{k})")
    else:
        if any(isinstance(p, tuple) for p in parts):
            bindings["_text"] = _text
        lines.append(" " * 8 + "return " + (" + ".join(pieces) if pieces else "''"))
    fn = _build("\n".join(lines), bindings, value)
    return CompiledExpr(fn, value, frozenset(aggregates), frozenset(props), frozenset(attrs))
