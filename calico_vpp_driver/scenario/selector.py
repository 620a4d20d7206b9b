"""Calico's label selector language, reimplemented to behave exactly like Calico's.

The scenario compiler needs to do what Felix's calculation graph does: decide which endpoints a
policy selects, which members an IP set has, and name each IP set with the same ID Felix would put
in its ``IPSetUpdate`` messages.  All of that hangs off selectors, so this module reproduces
libcalico-go's selector package (``libcalico-go/lib/selector/{tokenizer,parser}``) byte for byte:
the same accepted syntax (and the same rejections), the same evaluation results, the same
normalised ``String()`` form and the same ``UniqueID()`` hash.

Summary of the language as Calico implements it::

    expr      := or
    or        := and ( "||" and )*                   -> flat Or node when there are 2+ terms
    and       := operation ( "&&" operation )*       -> flat And node when there are 2+ terms
    operation := "!"* ( has(LABEL) | all() | global() | "(" or ")"
                       | LABEL ( "==" | "!=" | contains | starts with | ends with ) STRING
                       | LABEL ( in | not in ) "{" [ STRING ( "," STRING )* [","] ] "}" )

* ``!`` binds tighter than ``&&``, which binds tighter than ``||``; a run of ``!`` collapses to one
  negation or none (``!!has(a)`` is ``has(a)``), but a ``!`` in front of a parenthesised group whose
  content itself starts with ``!`` is kept (``!(!has(a))`` renders as ``!!has(a)``).
* Labels are runs of ``[A-Za-z0-9_./-]`` of at most 512 characters; strings are single- or
  double-quoted, with no escapes; the only whitespace is space and tab.
* ``starts with``/``ends with``/``not in`` may also be written without the space
  (``startswith``, ``endswith``, ``notin``); an empty (or all-blank) selector means ``all()``.
* ``!=``, ``not in`` (and negations generally) are true for an endpoint that lacks the label;
  ``==``, ``in``, ``contains``, ``starts with`` and ``ends with`` are false for it.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "ALL",
    "MAX_LABEL_LENGTH",
    "NAMED_PORT_PROTOCOLS",
    "AllNode",
    "AndNode",
    "GlobalNode",
    "HasNode",
    "LabelContainsNode",
    "LabelEndsWithNode",
    "LabelEqNode",
    "LabelInNode",
    "LabelNeNode",
    "LabelNotInNode",
    "LabelStartsWithNode",
    "Node",
    "NotNode",
    "OrNode",
    "Selector",
    "SelectorError",
    "make_unique_id",
    "named_port_ipset_id",
    "named_port_protocol",
    "normalise_selector",
    "parse_selector",
    "selector_ipset_id",
]

#: Longest label name Calico's tokenizer accepts (tokenizer.MaxLabelLength).
MAX_LABEL_LENGTH = 512

_LABEL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-"
)
# The tokenizer only skips spaces and tabs; a newline inside a selector is a syntax error.
_BLANKS = " \t"
# Characters Go's strings.TrimSpace removes (unicode.IsSpace): Python's str.isspace() also counts
# U+001C..U+001F, which Go does not, so the set is spelled out.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class SelectorError(ValueError):
    """A selector Calico would refuse to parse.

    ``selector`` is the offending text, ``position`` the 0-based character offset where the
    problem was found and ``problem`` a short description of it.
    """

    def __init__(self, selector: str, position: int, problem: str) -> None:
        super().__init__(
            f"invalid selector {selector!r}: {problem} at position {position}"
        )
        self.selector = selector
        self.position = position
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# Syntax tree.  Every node knows how to evaluate itself against a label map and how to write
# itself in Calico's normalised form.  Nodes are immutable and compare structurally.
# ---------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    # Calico prefers double quotes and falls back to single quotes when the value contains a
    # double quote.  A literal can never contain both kinds, since the parser has no escapes.
    quote = "'" if '"' in value else '"'
    return quote + value + quote


class Node(ABC):
    """A node of a parsed selector."""

    __slots__ = ()

    @abstractmethod
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """Whether an object carrying ``labels`` matches this node."""

    @abstractmethod
    def write(self, out: list[str]) -> None:
        """Append this node's normalised text to ``out``."""

    def children(self) -> tuple[Node, ...]:
        """Direct sub-expressions (empty for leaves)."""
        return ()

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, parents first."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))


@dataclass(frozen=True, slots=True)
class AllNode(Node):
    """``all()``: matches everything (also what an empty selector means)."""

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def write(self, out: list[str]) -> None:
        out.append("all()")


@dataclass(frozen=True, slots=True)
class GlobalNode(Node):
    """``global()``: matches everything when evaluated against labels.

    Its meaning (non-namespaced resources only) is applied by Calico's policy conversion, not by
    the selector evaluator, which treats it exactly like ``all()``.
    """

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def write(self, out: list[str]) -> None:
        out.append("global()")


@dataclass(frozen=True, slots=True)
class HasNode(Node):
    """``has(label)``: the label is present, whatever its value."""

    label: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def write(self, out: list[str]) -> None:
        out.extend(("has(", self.label, ")"))


@dataclass(frozen=True, slots=True)
class LabelEqNode(Node):
    """``label == "value"``: false when the label is absent."""

    label: str
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is not None and actual == self.value

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " == ", _quote(self.value)))


@dataclass(frozen=True, slots=True)
class LabelNeNode(Node):
    """``label != "value"``: TRUE when the label is absent (it is ``!(label == "value")``)."""

    label: str
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is None or actual != self.value

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " != ", _quote(self.value)))


@dataclass(frozen=True, slots=True)
class LabelContainsNode(Node):
    """``label contains "sub"``: substring test, false when the label is absent."""

    label: str
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is not None and self.value in actual

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " contains ", _quote(self.value)))


@dataclass(frozen=True, slots=True)
class LabelStartsWithNode(Node):
    """``label starts with "prefix"``: false when the label is absent."""

    label: str
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is not None and actual.startswith(self.value)

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " starts with ", _quote(self.value)))


@dataclass(frozen=True, slots=True)
class LabelEndsWithNode(Node):
    """``label ends with "suffix"``: false when the label is absent."""

    label: str
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is not None and actual.endswith(self.value)

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " ends with ", _quote(self.value)))


def _write_set(out: list[str], label: str, op: str, values: tuple[str, ...]) -> None:
    out.extend((label, op, "{", ", ".join(_quote(v) for v in values), "}"))


def _as_set(values: tuple[str, ...]) -> tuple[str, ...]:
    # Calico keeps set literals sorted (Go string order, i.e. UTF-8 byte order, which is the same
    # as code point order) and without duplicates; the normalised text depends on it.
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class LabelInNode(Node):
    """``label in {"a", "b"}``: false when the label is absent; ``values`` sorted, unique."""

    label: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _as_set(self.values))

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is not None and actual in self.values

    def write(self, out: list[str]) -> None:
        _write_set(out, self.label, " in ", self.values)


@dataclass(frozen=True, slots=True)
class LabelNotInNode(Node):
    """``label not in {"a", "b"}``: TRUE when the label is absent; ``values`` sorted, unique."""

    label: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _as_set(self.values))

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        return actual is None or actual not in self.values

    def write(self, out: list[str]) -> None:
        _write_set(out, self.label, " not in ", self.values)


@dataclass(frozen=True, slots=True)
class NotNode(Node):
    """``!operand``.  Written without parentheses: And/Or bring their own."""

    operand: Node

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def write(self, out: list[str]) -> None:
        out.append("!")
        self.operand.write(out)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class AndNode(Node):
    """``a && b && ...`` (at least two operands), always written in parentheses."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("AndNode needs at least two operands")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return all(op.evaluate(labels) for op in self.operands)

    def write(self, out: list[str]) -> None:
        out.append("(")
        for i, op in enumerate(self.operands):
            if i:
                out.append(" && ")
            op.write(out)
        out.append(")")

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class OrNode(Node):
    """``a || b || ...`` (at least two operands), always written in parentheses."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("OrNode needs at least two operands")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return any(op.evaluate(labels) for op in self.operands)

    def write(self, out: list[str]) -> None:
        out.append("(")
        for i, op in enumerate(self.operands):
            if i:
                out.append(" || ")
            op.write(out)
        out.append(")")

    def children(self) -> tuple[Node, ...]:
        return self.operands


# ---------------------------------------------------------------------------------------------
# Hashing.
# ---------------------------------------------------------------------------------------------


def make_unique_id(prefix: str, content: str) -> str:
    """Calico's ``hash.MakeUniqueID`` (libcalico-go/lib/hash/unique_id.go).

    ``prefix + ":" + base64url_unpadded(sha224(prefix + ":" + content))``: 38 characters of hash
    after the prefix.  Go hashes the string's raw bytes; ``surrogateescape`` lets a str decoded
    that way hash to the original bytes.
    """
    digest = hashlib.sha224(
        f"{prefix}:{content}".encode("utf-8", "surrogateescape")
    ).digest()
    return prefix + ":" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------
# The parsed selector.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: an immutable, hashable value.

    Two selectors are equal when their normalised texts are equal, which is how Calico compares
    them (``Selector.Equal`` compares unique IDs, a hash of that text).
    """

    root: Node = field(compare=False)
    _canonical: str = field(init=False, repr=False)
    _unique_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out: list[str] = []
        self.root.write(out)
        text = "".join(out)
        object.__setattr__(self, "_canonical", text)
        object.__setattr__(self, "_unique_id", make_unique_id("s", text))

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels matches, as Calico's ``Selector.Evaluate``."""
        return self.root.evaluate(labels)

    def canonical(self) -> str:
        """Calico's normalised text (``Selector.String()``)."""
        return self._canonical

    def unique_id(self) -> str:
        """Calico's ``Selector.UniqueID()``: ``make_unique_id("s", self.canonical())``."""
        return self._unique_id

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"


# ---------------------------------------------------------------------------------------------
# Tokenizer (mirrors libcalico-go/lib/selector/tokenizer).
# ---------------------------------------------------------------------------------------------


class _Kind(enum.Enum):
    LABEL = "label"
    STRING = "string literal"
    LBRACE = "'{'"
    RBRACE = "'}'"
    COMMA = "','"
    EQ = "'=='"
    NE = "'!='"
    IN = "'in'"
    NOT = "'!'"
    NOT_IN = "'not in'"
    CONTAINS = "'contains'"
    STARTS_WITH = "'starts with'"
    ENDS_WITH = "'ends with'"
    ALL = "'all()'"
    HAS = "'has()'"
    LPAREN = "'('"
    RPAREN = "')'"
    AND = "'&&'"
    OR = "'||'"
    GLOBAL = "'global()'"
    EOF = "end of selector"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    value: str
    pos: int

    def describe(self) -> str:
        if self.kind is _Kind.LABEL:
            return f"label {self.value!r}"
        if self.kind is _Kind.STRING:
            return f"string {_quote(self.value)}"
        return str(self.kind.value)


_SIMPLE_TOKENS = {
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    "{": _Kind.LBRACE,
    "}": _Kind.RBRACE,
    ",": _Kind.COMMA,
}
_DOUBLE_TOKENS = {"=": ("==", _Kind.EQ), "&": ("&&", _Kind.AND), "|": ("||", _Kind.OR)}
# Operators recognised only straight after a label, tried in Calico's order ("not in" before
# "in").  Multi-word operators may have any blanks (or none) between their words.
_WORD_OPERATORS: tuple[tuple[tuple[str, ...], _Kind], ...] = (
    (("contains",), _Kind.CONTAINS),
    (("starts", "with"), _Kind.STARTS_WITH),
    (("ends", "with"), _Kind.ENDS_WITH),
    (("not", "in"), _Kind.NOT_IN),
    (("in",), _Kind.IN),
)
# Function-like keywords, recognised only with the "(" glued to the name.
_FUNCTIONS = (("all(", _Kind.ALL), ("global(", _Kind.GLOBAL))


def _skip_blanks(text: str, i: int) -> int:
    while i < len(text) and text[i] in _BLANKS:
        i += 1
    return i


def _label_end(text: str, i: int) -> int:
    while i < len(text) and text[i] in _LABEL_CHARS:
        i += 1
    return i


def _word_boundary(text: str, i: int) -> bool:
    return i >= len(text) or text[i] not in _LABEL_CHARS


def _match_word_operator(text: str, i: int, words: tuple[str, ...]) -> int | None:
    """End of the operator made of ``words`` at ``i``, or None if it is not there."""
    j = i
    if len(words) == 1:
        if not text.startswith(words[0], j):
            return None
        j += len(words[0])
    else:
        # Calico skips blanks after every word, the last one included, before checking that
        # the operator is not the start of a longer word.
        for word in words:
            if not text.startswith(word, j):
                return None
            j = _skip_blanks(text, j + len(word))
    return j if _word_boundary(text, j) else None


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[_Token] = []

    def fail(self, pos: int, problem: str) -> SelectorError:
        return SelectorError(self.text, pos, problem)

    def cut_label(self, i: int) -> tuple[str, int]:
        end = _label_end(self.text, i)
        if end == i:
            if i >= len(self.text):
                raise self.fail(i, "expected a label, found the end of the selector")
            raise self.fail(i, f"expected a label, found {self.text[i]!r}")
        if end - i > MAX_LABEL_LENGTH:
            raise self.fail(i, f"label longer than {MAX_LABEL_LENGTH} characters")
        return self.text[i:end], end

    def closing_paren(self, i: int, start: int, name: str) -> int:
        i = _skip_blanks(self.text, i)
        if not self.text.startswith(")", i):
            raise self.fail(start, f"no closing ')' after {name}(")
        return i + 1

    def run(self) -> list[_Token]:
        text = self.text
        tokens = self.tokens
        i = 0
        while True:
            i = _skip_blanks(text, i)
            if i >= len(text):
                tokens.append(_Token(_Kind.EOF, "", i))
                return tokens
            start = i
            c = text[i]
            after_label = bool(tokens) and tokens[-1].kind is _Kind.LABEL
            if c in _SIMPLE_TOKENS:
                tokens.append(_Token(_SIMPLE_TOKENS[c], "", start))
                i += 1
            elif c in "\"'":
                close = text.find(c, i + 1)
                if close < 0:
                    raise self.fail(start, "unterminated string")
                tokens.append(_Token(_Kind.STRING, text[i + 1 : close], start))
                i = close + 1
            elif c in _DOUBLE_TOKENS:
                op, kind = _DOUBLE_TOKENS[c]
                if not text.startswith(op, i):
                    raise self.fail(start, f"expected {op}")
                tokens.append(_Token(kind, "", start))
                i += 2
            elif c == "!":
                if text.startswith("!=", i):
                    tokens.append(_Token(_Kind.NE, "", start))
                    i += 2
                else:
                    tokens.append(_Token(_Kind.NOT, "", start))
                    i += 1
            elif after_label:
                # After a label only a word operator may follow (symbols were handled above).
                for words, kind in _WORD_OPERATORS:
                    end = _match_word_operator(text, i, words)
                    if end is not None:
                        tokens.append(_Token(kind, "", start))
                        i = end
                        break
                else:
                    raise self.fail(
                        start, f"expected an operator after label {tokens[-1].value!r}"
                    )
            elif text.startswith("has(", i):
                label, i = self.cut_label(_skip_blanks(text, i + 4))
                i = self.closing_paren(i, start, "has")
                tokens.append(_Token(_Kind.HAS, label, start))
            else:
                for prefix, kind in _FUNCTIONS:
                    if text.startswith(prefix, i):
                        i = self.closing_paren(i + len(prefix), start, prefix[:-1])
                        tokens.append(_Token(kind, "", start))
                        break
                else:
                    label, i = self.cut_label(i)
                    tokens.append(_Token(_Kind.LABEL, label, start))


# ---------------------------------------------------------------------------------------------
# Parser (mirrors libcalico-go/lib/selector/parser/parser.go): recursive descent with "||" as
# the loosest operator, then "&&", then (possibly negated) operations.
# ---------------------------------------------------------------------------------------------

_VALUE_OPERATORS: dict[_Kind, Callable[[str, str], Node]] = {
    _Kind.EQ: LabelEqNode,
    _Kind.NE: LabelNeNode,
    _Kind.CONTAINS: LabelContainsNode,
    _Kind.STARTS_WITH: LabelStartsWithNode,
    _Kind.ENDS_WITH: LabelEndsWithNode,
}


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens  # always ends with an EOF token, which nothing consumes

    def fail(self, token: _Token, problem: str) -> SelectorError:
        return SelectorError(self.text, token.pos, problem)

    def parse(self) -> Node:
        if self.tokens[0].kind is _Kind.EOF:
            return AllNode()
        node, i = self.parse_or(0)
        if self.tokens[i].kind is not _Kind.EOF:
            raise self.fail(
                self.tokens[i],
                f"unexpected {self.tokens[i].describe()} after a complete expression",
            )
        return node

    def parse_or(self, i: int) -> tuple[Node, int]:
        node, i = self.parse_and(i)
        terms = [node]
        while self.tokens[i].kind is _Kind.OR:
            node, i = self.parse_and(i + 1)
            terms.append(node)
        return (terms[0] if len(terms) == 1 else OrNode(tuple(terms))), i

    def parse_and(self, i: int) -> tuple[Node, int]:
        node, i = self.parse_operation(i)
        terms = [node]
        while self.tokens[i].kind is _Kind.AND:
            node, i = self.parse_operation(i + 1)
            terms.append(node)
        return (terms[0] if len(terms) == 1 else AndNode(tuple(terms))), i

    def parse_operation(self, i: int) -> tuple[Node, int]:
        tokens = self.tokens
        negated = False
        while tokens[i].kind is _Kind.NOT:
            negated = not negated
            i += 1
        tok = tokens[i]
        node: Node
        if tok.kind is _Kind.HAS:
            node, i = HasNode(tok.value), i + 1
        elif tok.kind is _Kind.ALL:
            node, i = AllNode(), i + 1
        elif tok.kind is _Kind.GLOBAL:
            node, i = GlobalNode(), i + 1
        elif tok.kind is _Kind.LABEL:
            node, i = self.parse_comparison(i)
        elif tok.kind is _Kind.LPAREN:
            node, i = self.parse_or(i + 1)
            if tokens[i].kind is not _Kind.RPAREN:
                raise self.fail(
                    tokens[i],
                    f"expected ')' to close the '(' at position {tok.pos}, "
                    f"found {tokens[i].describe()}",
                )
            i += 1
        else:
            raise self.fail(tok, f"unexpected {tok.describe()}, expected an expression")
        return (NotNode(node) if negated else node), i

    def parse_comparison(self, i: int) -> tuple[Node, int]:
        tokens = self.tokens
        label, op = tokens[i].value, tokens[i + 1]
        if op.kind is _Kind.EOF:
            raise self.fail(op, f"expected an operator after label {label!r}")
        operand = tokens[i + 2] if i + 2 < len(tokens) else op
        value_node = _VALUE_OPERATORS.get(op.kind)
        if value_node is not None:
            if operand.kind is not _Kind.STRING:
                raise self.fail(
                    operand,
                    f"expected a quoted string after {op.kind.value}, "
                    f"found {operand.describe()}",
                )
            return value_node(label, operand.value), i + 3
        if op.kind in (_Kind.IN, _Kind.NOT_IN):
            if operand.kind is not _Kind.LBRACE:
                raise self.fail(
                    operand,
                    f"expected a set literal {{...}} after {op.kind.value}, "
                    f"found {operand.describe()}",
                )
            i += 3
            values: list[str] = []
            while tokens[i].kind is _Kind.STRING:
                values.append(tokens[i].value)
                i += 1
                if tokens[i].kind is not _Kind.COMMA:
                    break
                i += 1  # a trailing comma before "}" is accepted, as in Calico
            if tokens[i].kind is not _Kind.RBRACE:
                raise self.fail(
                    tokens[i],
                    f"expected a string or '}}' in set literal, found {tokens[i].describe()}",
                )
            cls = LabelInNode if op.kind is _Kind.IN else LabelNotInNode
            return cls(label, tuple(values)), i + 1
        raise self.fail(
            op, f"expected an operator after label {label!r}, found {op.describe()}"
        )


# ---------------------------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _parse_cached(text: str) -> Selector:
    try:
        tokens = _Tokenizer(text).run()
        return Selector(_Parser(text, tokens).parse())
    except RecursionError:
        # Calico's Go parser has no depth limit; Python's stack does.
        raise SelectorError(text, 0, "expression nested too deeply") from None


def parse_selector(text: str) -> Selector:
    """Parse ``text`` exactly as Calico's ``selector.Parse`` would.

    Results are cached (selectors are immutable), so parsing the same text again is cheap.
    Raises ``SelectorError`` (a ``ValueError``) for anything Calico rejects.
    """
    if not isinstance(text, str):
        raise TypeError(f"selector must be a str, not {type(text).__name__}")
    return _parse_cached(text)


def normalise_selector(text: str) -> str:
    """Calico's ``selector.Normalise``: the normalised text, or the (trimmed) input if invalid.

    Felix uses this for the ``original_selector`` it reports for a policy.  Unlike parsing, it
    first trims Go's notion of whitespace (newlines included) from both ends.
    """
    text = text.strip(_GO_SPACE)
    try:
        return parse_selector(text).canonical()
    except SelectorError:
        return text


#: ``all()``, the selector Felix uses for a named port without a positive selector.
ALL = parse_selector("all()")

#: Protocol names Felix's named-port IP set IDs use (``ipsetmember.Protocol.String()``).
NAMED_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "any"})


def _as_selector(sel: Selector | str | None) -> Selector:
    if sel is None:
        return ALL
    if isinstance(sel, str):
        return parse_selector(sel)
    return sel


def selector_ipset_id(sel: Selector | str) -> str:
    """ID of the IP set Felix creates for a rule's (source or destination) selector.

    From felix/calc/rule_scanner.go, ``IPSetData.UniqueID()``: a selector-only IP set (no named
    port, no service) is identified by the selector's own ``UniqueID()``, i.e.
    ``"s:" + base64url(sha224("s:" + normalised selector))``.  A string is parsed first.
    """
    return _as_selector(sel).unique_id()


def named_port_protocol(rule_protocol: str | int | None) -> str:
    """The protocol name Felix uses for a rule's named ports, given the rule's ``protocol``.

    From felix/calc/rule_scanner.go (``ruleToParsedRule``) and
    felix/labelindex/ipsetmember/ipset_port_protocol.go (``ProtocolFrom``): no protocol on the
    rule gives ``"any"``; otherwise "udp" (or 17) gives ``"udp"``, "sctp" (or 132) gives
    ``"sctp"`` and anything else, "tcp" or not, gives ``"tcp"``.  Names compare
    case-insensitively.
    """
    if rule_protocol is None:
        return "any"
    if isinstance(rule_protocol, int):
        return {17: "udp", 132: "sctp"}.get(rule_protocol, "tcp")
    return {"udp": "udp", "sctp": "sctp"}.get(rule_protocol.lower(), "tcp")


def named_port_ipset_id(sel: Selector | str | None, proto: str, port_name: str) -> str:
    """ID of the IP set Felix creates for a named port, filtered by a selector.

    From felix/calc/rule_scanner.go, ``IPSetData.UniqueID()`` with a named port:
    ``make_unique_id("n", sel.UniqueID() + "," + protocol + "," + port_name)``, i.e.
    ``"n:" + base64url(sha224("n:s:<hash>,tcp,http"))``.  ``sel`` is the rule's positive
    selector for that direction, or None for Felix's ``selector.All`` (``all()``) when the rule
    has none (``namedPortsToIPSets``).  ``proto`` is one of ``tcp``, ``udp``, ``sctp``, ``any``
    (see ``named_port_protocol``).
    """
    proto_name = proto.lower()
    if proto_name not in NAMED_PORT_PROTOCOLS:
        raise ValueError(
            f"named port protocol must be one of {sorted(NAMED_PORT_PROTOCOLS)}, not {proto!r}"
        )
    return make_unique_id(
        "n", f"{_as_selector(sel).unique_id()},{proto_name},{port_name}"
    )
