"""Tests for calico_vpp_driver.scenario.selector: Calico's label selector language.

Table expectations marked "upstream" are taken from libcalico-go's own tests
(libcalico-go/lib/selector/parser/parser_test.go, .../tokenizer/tokenizer_test.go), so passing
them shows the normalised text and the unique IDs match Calico's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calico_vpp_driver.scenario.selector import (
    ALL,
    AllNode,
    AndNode,
    HasNode,
    LabelEqNode,
    LabelInNode,
    Node,
    NotNode,
    OrNode,
    Selector,
    SelectorError,
    make_unique_id,
    named_port_ipset_id,
    named_port_protocol,
    normalise_selector,
    parse_selector,
    selector_ipset_id,
)

Labels = Mapping[str, str]

# ---------------------------------------------------------------------------------------------
# Canonical text and unique IDs.
# ---------------------------------------------------------------------------------------------

# upstream: parser_test.go canonicalisationTests (input, String(), UniqueID() or "").
UPSTREAM_CANONICAL: list[tuple[str, str, str]] = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (
        "! (has( b)||! has(a ))",
        "!(has(b) || !has(a))",
        "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q",
    ),
    (
        '! (a == "b"&&! c != "d")',
        '!(a == "b" && !c != "d")',
        "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w",
    ),
    ('a == "\'"', 'a == "\'"', ""),
    ("a == '\"'", "a == '\"'", ""),
    ("a contains '\"'", "a contains '\"'", ""),
    ('a contains "\'"', 'a contains "\'"', ""),
    ("a startswith '\"'", "a starts with '\"'", ""),
    ('a endswith "\'"', 'a ends with "\'"', ""),
    ("a!='\"'", "a != '\"'", ""),
    ('a in {"d"}', 'a in {"d"}', ""),
    ('a in {"a", "b"}', 'a in {"a", "b"}', ""),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', ""),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    # upstream: the Visitor tests' expected output, minus the "visited/" prefix.
    ("k == 'v'", 'k == "v"', ""),
    ("k starts with 'v'", 'k starts with "v"', ""),
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")', ""),
    ("k == 'v' || has(x)", '(k == "v" || has(x))', ""),
    ("!(k == 'v')", '!k == "v"', ""),
    ("k not in {'v'}", 'k not in {"v"}', ""),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})',
        "",
    ),
]


@pytest.mark.parametrize(("text", "canonical", "uid"), UPSTREAM_CANONICAL)
def test_upstream_canonical_forms_and_ids(text: str, canonical: str, uid: str) -> None:
    sel = parse_selector(text)
    assert sel.canonical() == canonical
    assert str(sel) == canonical
    again = parse_selector(canonical)
    assert again.canonical() == canonical
    assert again.unique_id() == sel.unique_id()
    if uid:
        assert sel.unique_id() == uid


# Further normalisation cases derived from the Go parser's rules.
MORE_CANONICAL: list[tuple[str, str]] = [
    ("   ", "all()"),
    ("\t", "all()"),
    ("global( )", "global()"),
    ("all( )", "all()"),
    ("has( a )", "has(a)"),
    ("a=='b'", 'a == "b"'),
    ('a == "it\'s"', 'a == "it\'s"'),
    ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
    ("a == ''", 'a == ""'),
    ("a notin {'x'}", 'a not in {"x"}'),
    ("a not  in {'x'}", 'a not in {"x"}'),
    ("a starts  with 'x'", 'a starts with "x"'),
    ("a\tends\twith\t'x'", 'a ends with "x"'),
    ("a contains'x'", 'a contains "x"'),
    ("a in{'x','y',}", 'a in {"x", "y"}'),  # trailing comma accepted
    ("a in {}", "a in {}"),
    ("a not in {}", "a not in {}"),
    ("a in {'b', \"'\", '\"'}", 'a in {\'"\', "\'", "b"}'),  # sorted by byte value
    ("a in {'\u00e9', 'z', 'Z'}", 'a in {"Z", "z", "\u00e9"}'),
    # Precedence: ! binds tightest, then &&, then ||.
    ("a == 'x' || b == 'y' && c == 'z'", '(a == "x" || (b == "y" && c == "z"))'),
    ("a == 'x' && b == 'y' || c == 'z'", '((a == "x" && b == "y") || c == "z")'),
    ("!a == 'x' && b == 'y'", '(!a == "x" && b == "y")'),
    ("!(a == 'x' && b == 'y')", '!(a == "x" && b == "y")'),
    ("has(a) && has(b) && has(c)", "(has(a) && has(b) && has(c))"),
    ("has(a) || has(b) || has(c)", "(has(a) || has(b) || has(c))"),
    # Explicit grouping is kept as nesting, never flattened.
    ("(has(a) && has(b)) && has(c)", "((has(a) && has(b)) && has(c))"),
    ("has(a) && (has(b) && has(c))", "(has(a) && (has(b) && has(c)))"),
    ("((((has(a)))))", "has(a)"),
    # A run of "!" collapses; a "!" in front of a group starting with "!" does not.
    ("!!has(b)", "has(b)"),
    ("!! ! has(a)", "!has(a)"),
    ("!(!has(a))", "!!has(a)"),
    ("!(!(!has(a)))", "!!!has(a)"),
    ("!all()", "!all()"),
    # Label keys with prefixes, as Kubernetes and Calico use them.
    ("projectcalico.org/namespace == 'x'", 'projectcalico.org/namespace == "x"'),
    (
        "kubernetes.io/metadata.name in {'x', 'y'}",
        'kubernetes.io/metadata.name in {"x", "y"}',
    ),
    ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)"),
    (
        'calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
        '(calico/k8s_ns == "kube-system" && k8s-app == "kube-dns")',
    ),
    # Keywords are ordinary labels where a label is expected.
    ("contains contains 'contains'", 'contains contains "contains"'),
    ("startswith starts with 'v'", 'startswith starts with "v"'),
    ("in in {'in'}", 'in in {"in"}'),
    ("not not in {'x'}", 'not not in {"x"}'),
    ("has == 'x'", 'has == "x"'),
    ("all != 'x'", 'all != "x"'),
    ("a" * 512 + " == 'v'", "a" * 512 + ' == "v"'),
]


@pytest.mark.parametrize(("text", "canonical"), MORE_CANONICAL)
def test_canonical_forms(text: str, canonical: str) -> None:
    assert parse_selector(text).canonical() == canonical


def test_double_negation_of_a_group_is_not_a_fixed_point() -> None:
    # Calico renders NotNode(NotNode(x)) as "!!x", which re-parses as plain x: a different
    # canonical text and therefore a different IP set ID, exactly as Felix would see it.
    sel = parse_selector("!(!has(a))")
    assert sel.canonical() == "!!has(a)"
    again = parse_selector(sel.canonical())
    assert again.canonical() == "has(a)"
    assert sel != again
    assert sel.unique_id() != again.unique_id()
    assert sel.root == NotNode(NotNode(HasNode("a")))


def test_structure() -> None:
    sel = parse_selector("a == 'x' || !has(b) && c in {'2', '1', '2'}")
    assert sel.root == OrNode(
        (
            LabelEqNode("a", "x"),
            AndNode((NotNode(HasNode("b")), LabelInNode("c", ("1", "2")))),
        )
    )
    assert [type(n).__name__ for n in sel.root.walk()] == [
        "OrNode",
        "LabelEqNode",
        "AndNode",
        "NotNode",
        "HasNode",
        "LabelInNode",
    ]
    assert parse_selector("").root == AllNode()
    # Building a selector from nodes gives the same value as parsing its text.
    assert Selector(sel.root) == sel


# ---------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------

# upstream: parser_test.go selectorTests (selector, labels that match, labels that do not).
UPSTREAM_EVAL: list[tuple[str, list[dict[str, str]], list[dict[str, str]]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    (
        'a == "b" && c == "d"',
        [{"a": "b", "c": "d"}],
        [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}],
    ),
    (
        'a == "b" || c == "d"',
        [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
        [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}],
    ),
    ('a in {"\'", \'"\', "c"}', [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    (
        'a not in {"\'", \'"\', "c"}',
        [{}, {"a": "e"}],
        [{"a": "c"}, {"a": '"'}, {"a": "'"}],
    ),
    ("a == 'a'", [{"a": "a"}], [{"a": "b"}, {}]),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], [{"a": "a"}]),
    (
        'a contains "a"',
        [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}],
        [{}, {"a": "b"}, {"b": "aaa"}],
    ),
    (
        'a starts with "a"',
        [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
        [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}],
    ),
    (
        'a ends with "a"',
        [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
        [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}],
    ),
    ('a in {"a"}', [{"a": "a"}], [{"a": "b"}]),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}, {"a": "b"}], [{"a": "c"}]),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ("has(a)", [{"a": "b"}], []),
    ("has(b)", [], [{"a": "b"}]),
    ("!has(a)", [{"b": "b"}], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    ("", [{}, {"a": "b"}], []),
    (" ", [{}], []),
    ("all()", [{}], []),
    (" all()", [{}, {"a": "b"}], []),
    ("global()", [{}, {"a": "b"}], []),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]

# Calico's treatment of absent labels, spelled out.
MISSING_LABEL_EVAL: list[tuple[str, bool]] = [
    ("a == 'x'", False),
    ("a != 'x'", True),
    ("a in {'x'}", False),
    ("a not in {'x'}", True),
    ("a in {''}", False),  # absent is not the empty string
    ("a not in {''}", True),
    ("a contains ''", False),
    ("a starts with ''", False),
    ("a ends with ''", False),
    ("has(a)", False),
    ("!has(a)", True),
    ("!a == 'x'", True),
    ("a in {}", False),
    ("a not in {}", True),
    ("global()", True),
    ("!global()", False),
    ("!all()", False),
]


@pytest.mark.parametrize(("text", "matches", "non_matches"), UPSTREAM_EVAL)
def test_upstream_evaluation(
    text: str, matches: list[dict[str, str]], non_matches: list[dict[str, str]]
) -> None:
    sel = parse_selector(text)
    again = parse_selector(sel.canonical())
    for labels in matches:
        assert sel.evaluate(labels), labels
        assert again.evaluate(labels), labels
    for labels in non_matches:
        assert not sel.evaluate(labels), labels
        assert not again.evaluate(labels), labels


@pytest.mark.parametrize(("text", "expected"), MISSING_LABEL_EVAL)
def test_missing_label(text: str, expected: bool) -> None:
    assert parse_selector(text).evaluate({"other": "x"}) is expected


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("a == ''", {"a": ""}, True),
        ("a contains ''", {"a": ""}, True),
        ("a starts with 'ab'", {"a": "a"}, False),
        ("a ends with 'é'", {"a": "café"}, True),
        ("a == 'B'", {"a": "b"}, False),  # case-sensitive
        ("A == 'b'", {"a": "b"}, False),
        (
            "kubernetes.io/metadata.name == 'x'",
            {"kubernetes.io/metadata.name": "x"},
            True,
        ),
        (
            "projectcalico.org/namespace in {'x'}",
            {"projectcalico.org/namespace": "y"},
            False,
        ),
    ],
)
def test_evaluation_details(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).evaluate(labels) is expected


# ---------------------------------------------------------------------------------------------
# Rejected input.
# ---------------------------------------------------------------------------------------------

BAD_SELECTORS: list[str] = [
    # upstream: parser_test.go badSelectors
    "b == b",
    "b contains b",
    "b starts with b",
    "b ends with b",
    "'b1' == b",
    "b",
    "a b",
    "!",
    'foo == "bar" &',
    'foo == "bar" |',
    "foo != ||",
    'foo in {"", ||',
    'foo in ""',
    '"FOO',
    "\"FOO'",
    "'FOO",
    "(",
    '(a == "foo"',
    ")",
    "()",
    "%",
    'a == "b" && %',
    'a == "b" || %',
    "a ",
    "has(foo) &&",
    # upstream: tokenizer_test.go inputs that must not tokenize
    "a" * 513 + ' == "value"',
    'label == "value',
    "label == 'value",
    'label = "value"',
    "all(",
    "global(",
    "has()",
    "has(foo",
    "has( foo ",
    'a == "b" & has(foo)',
    'a == "b" | has(foo)',
    'label starts foo "value"',
    'label inf "value"',
    'label ends foo "value"',
    'label ends withs "value"',
    'label squiggles "value"',
    # upstream: tokenizes, but is not a valid selector
    'a not in "bar" && !has(foo) || b in c',
    'a notin"bar"&&!has(foo)||b in"c"',
    # more, following the same rules
    "a == 'x'\n",  # only space and tab are whitespace
    "\na == 'x'",
    "a ==\n'x'",
    "a\u00a0== 'x'",
    "a == 'x' b == 'y'",
    "has(a) has(b)",
    "has (a)",
    "all ()",
    "has(a b)",
    "has(a/'b')",
    "a in {'x' 'y'}",
    "a in {,}",
    "a in {'x',,}",
    "a in ('x')",
    "a in {'x'",
    "a in {x}",
    "a ==",
    "a !=",
    "== 'a'",
    "a === 'x'",
    "a ! = 'x'",
    "a &&",
    "&& a == 'x'",
    "|| has(a)",
    "has(a) ||",
    "has(a) &&& has(b)",
    "a == 'x' && (b == 'y'",
    "a == 'x')",
    "!()",
    "(has(a)))",
    "a contains",
    "a starts 'x'",
    "a startswithx 'x'",
    "a notinx {'x'}",
    "a inx {'x'}",
    "a == 'x' !",
    "café == 'x'",
    "a.b:c == 'x'",
    "a = = 'x'",
    "label == value",
    "has(" + "a" * 513 + ")",
    "!!!",
    "all() all()",
    "a in {'x'} }",
]


@pytest.mark.parametrize("text", BAD_SELECTORS)
def test_rejects(text: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.selector == text
    assert 0 <= err.position <= len(text)
    assert repr(text) in str(err)
    assert f"at position {err.position}" in str(err)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("a == 'x' && b", 13, "operator after label 'b'"),
        ("a == b", 5, "quoted string"),
        ("a in 'x'", 5, "set literal"),
        ("a == 'x", 5, "unterminated string"),
        ("has(a) &", 7, "expected &&"),
        ("(has(a)", 7, "')'"),
        ("has(a) has(b)", 7, "unexpected 'has()'"),
        ("a == 'x'\n", 8, "expected a label"),
        ("a" * 513, 0, "longer than 512"),
        ("a in {'x' 'y'}", 10, "set literal"),
    ],
)
def test_error_positions(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert info.value.position == position
    assert fragment in info.value.problem


def test_deep_nesting() -> None:
    # Calico accepts any depth; moderate depth works here, absurd depth is a clean error.
    text = "(" * 100 + "has(a)" + ")" * 100
    assert parse_selector(text).canonical() == "has(a)"
    with pytest.raises(SelectorError):
        parse_selector("(" * 100_000 + "has(a)" + ")" * 100_000)


def test_non_string_rejected() -> None:
    with pytest.raises(TypeError):
        parse_selector(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Value semantics, caching.
# ---------------------------------------------------------------------------------------------


def test_value_object() -> None:
    a = parse_selector("a == 'x' && has(b)")
    b = parse_selector("(a=='x')&&has( b )")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, parse_selector("has(b)")}) == 2
    assert a != parse_selector("has(b) && a == 'x'")  # Calico does not reorder operands
    assert a != object()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.root = AllNode()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        HasNode("a").label = "b"  # type: ignore[misc]
    assert repr(a) == "Selector('(a == \"x\" && has(b))')"
    assert parse_selector("a == 'x' && has(b)") is a  # cached
    assert parse_selector("") == ALL == parse_selector("all()")
    assert parse_selector("global()") != ALL


# ---------------------------------------------------------------------------------------------
# Felix IP set IDs.
# ---------------------------------------------------------------------------------------------


def _independent_unique_id(prefix: str, content: str) -> str:
    digest = hashlib.sha224((prefix + ":" + content).encode()).digest()
    return prefix + ":" + base64.b64encode(digest, altchars=b"-_").decode().rstrip("=")


def test_make_unique_id() -> None:
    uid = make_unique_id("test", "content")
    assert uid.startswith("test:") and len(uid) == len("test:") + 38
    assert uid == _independent_unique_id("test", "content")
    assert make_unique_id("x", "é") == _independent_unique_id("x", "é")


def test_selector_ipset_id() -> None:
    # upstream: UniqueID of "!(has(b) || !has(a))" from parser_test.go.
    assert (
        selector_ipset_id("! (has( b)||! has(a ))")
        == "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"
    )
    sel = parse_selector("role == 'db'")
    assert (
        selector_ipset_id(sel) == sel.unique_id() == make_unique_id("s", 'role == "db"')
    )
    # Pinned so that an accidental change of ID scheme shows up.
    assert selector_ipset_id(sel) == "s:rV61RKD1Q8wo61pyeB0j2rwE3eiBOFbx0SsYKg"


def test_named_port_ipset_id() -> None:
    # felix/calc/rule_scanner.go: MakeUniqueID("n", selID + "," + proto + "," + portName).
    sel = parse_selector("role == 'db'")
    expected = _independent_unique_id("n", sel.unique_id() + ",tcp,http")
    assert named_port_ipset_id(sel, "tcp", "http") == expected
    assert named_port_ipset_id("role=='db'", "TCP", "http") == expected
    # No positive selector: Felix uses selector.All, i.e. all().
    all_id = "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert named_port_ipset_id(None, "udp", "dns") == _independent_unique_id(
        "n", all_id + ",udp,dns"
    )
    assert named_port_ipset_id(None, "udp", "dns") == named_port_ipset_id(
        "", "udp", "dns"
    )
    assert named_port_ipset_id(None, "any", "dns").startswith("n:")
    assert named_port_ipset_id(sel, "tcp", "http") != named_port_ipset_id(
        sel, "udp", "http"
    )
    # Pinned so that an accidental change of ID scheme shows up.
    assert (
        named_port_ipset_id(None, "tcp", "http")
        == "n:cl9_Kgeu4H0OGLbhovVR3NBLUOZscKeMK1Mu4A"
    )
    with pytest.raises(ValueError):
        named_port_ipset_id(sel, "icmp", "http")


@pytest.mark.parametrize(
    ("rule_protocol", "expected"),
    [
        (None, "any"),
        ("TCP", "tcp"),
        ("tcp", "tcp"),
        ("UDP", "udp"),
        ("SCTP", "sctp"),
        ("ICMP", "tcp"),
        (6, "tcp"),
        (17, "udp"),
        (132, "sctp"),
        (1, "tcp"),
    ],
)
def test_named_port_protocol(rule_protocol: str | int | None, expected: str) -> None:
    assert named_port_protocol(rule_protocol) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "all()"),
        ("  a=='b'\n", 'a == "b"'),
        ("\n\thas( a )\r\n", "has(a)"),
        (" bad selector ", "bad selector"),
        ("a == 'x'\x1c", "a == 'x'\x1c"),  # Go does not trim U+001C
    ],
)
def test_normalise_selector(text: str, expected: str) -> None:
    assert normalise_selector(text) == expected


# ---------------------------------------------------------------------------------------------
# Property tests.  Selectors are generated together with a reference predicate written straight
# from Calico's semantics, and rendered with random (valid) formatting.
# ---------------------------------------------------------------------------------------------

LABEL_KEYS = ["a", "b", "app.kubernetes.io/name", "projectcalico.org/namespace"]
LABEL_VALUES = ["", "v", "w", "vw", "x-1", "'", '"', "é"]

label_maps = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES))
blank = st.sampled_from(["", " ", "  ", "\t"])


@dataclasses.dataclass(frozen=True)
class Gen:
    """A generated selector: source text plus what it must evaluate to."""

    text: str
    pred: Callable[[Labels], bool]
    atomic: bool  # usable as an operand of "!" without parentheses


@st.composite
def quoted(draw: st.DrawFn, value: str) -> str:
    if '"' in value:
        quote = "'"
    elif "'" in value:
        quote = '"'
    else:
        quote = draw(st.sampled_from(["'", '"']))
    return quote + value + quote


def _present(key: str, labels: Labels, test: Callable[[str], bool]) -> bool:
    return key in labels and test(labels[key])


@st.composite
def comparisons(draw: st.DrawFn) -> Gen:
    key = draw(st.sampled_from(LABEL_KEYS))
    value = draw(st.sampled_from(LABEL_VALUES))
    kind = draw(
        st.sampled_from(
            ["==", "!=", "contains", "starts", "ends", "in", "notin", "has"]
        )
    )
    b1, b2 = draw(blank), draw(blank)
    if kind == "has":
        return Gen(f"has({b1}{key}{b2})", lambda lb: key in lb, True)
    if kind in ("in", "notin"):
        values = draw(st.lists(st.sampled_from(LABEL_VALUES), max_size=4))
        items = [draw(quoted(v)) for v in values]
        body = ("," + draw(blank)).join(items)
        trailing_comma: bool = draw(st.booleans())
        if items and trailing_comma:
            body += ","
        op = (
            "in"
            if kind == "in"
            else draw(st.sampled_from(["not in", "notin", "not  in"]))
        )
        text = f"{key} {op}{b1}{{{b2}{body}}}"
        if kind == "in":
            return Gen(text, lambda lb: _present(key, lb, lambda v: v in values), True)
        return Gen(text, lambda lb: not _present(key, lb, lambda v: v in values), True)
    lit = draw(quoted(value))
    preds: dict[str, tuple[list[str], Callable[[str], bool]]] = {
        "==": (["=="], lambda v: v == value),
        "!=": (["!="], lambda v: v != value),
        "contains": ([" contains "], lambda v: value in v),
        "starts": (
            [" starts with ", " startswith ", " starts\twith "],
            lambda v: v.startswith(value),
        ),
        "ends": ([" ends with ", " endswith "], lambda v: v.endswith(value)),
    }
    spellings, test = preds[kind]
    text = f"{key}{b1}{draw(st.sampled_from(spellings))}{b2}{lit}"
    if kind == "!=":
        return Gen(text, lambda lb: key not in lb or test(lb[key]), True)
    return Gen(text, lambda lb: _present(key, lb, test), True)


leaves = st.one_of(
    comparisons(),
    st.just(Gen("all()", lambda lb: True, True)),
    st.just(Gen("global( )", lambda lb: True, True)),
)


def _paren(g: Gen) -> Gen:
    return Gen(f"({g.text})", g.pred, True)


def _atom(g: Gen) -> Gen:
    return g if g.atomic else _paren(g)


def _combine(children: st.SearchStrategy[Gen]) -> st.SearchStrategy[Gen]:
    def negate(g: Gen) -> Gen:
        a = _atom(g)
        return Gen(f"!{a.text}", lambda lb: not a.pred(lb), True)

    def conj(gs: list[Gen]) -> Gen:
        parts = [_atom(g) for g in gs]
        return Gen(
            " && ".join(p.text for p in parts),
            lambda lb: all(p.pred(lb) for p in parts),
            False,
        )

    def disj(gs: list[Gen]) -> Gen:
        parts = [_atom(g) for g in gs]
        return Gen(
            " || ".join(p.text for p in parts),
            lambda lb: any(p.pred(lb) for p in parts),
            False,
        )

    return st.one_of(
        children.map(negate),
        children.map(_paren),
        st.lists(children, min_size=2, max_size=3).map(conj),
        st.lists(children, min_size=2, max_size=3).map(disj),
    )


generated = st.recursive(leaves, _combine, max_leaves=8)


def _has_double_not(node: Node) -> bool:
    return any(
        isinstance(n, NotNode) and isinstance(n.operand, NotNode) for n in node.walk()
    )


@given(generated, st.lists(label_maps, min_size=1, max_size=8))
def test_evaluation_matches_reference(g: Gen, maps: list[dict[str, str]]) -> None:
    sel = parse_selector(g.text)
    for labels in maps:
        assert sel.evaluate(labels) == g.pred(labels), (g.text, labels)


@given(generated, st.lists(label_maps, min_size=1, max_size=8))
def test_canonical_round_trip(g: Gen, maps: list[dict[str, str]]) -> None:
    sel = parse_selector(g.text)
    again = parse_selector(sel.canonical())
    third = parse_selector(again.canonical())
    if not _has_double_not(sel.root):
        assert again.canonical() == sel.canonical()
        assert again.unique_id() == sel.unique_id()
        assert again.root == sel.root
    # Double negations written as "!(!x)" need one more round to settle.
    assert third.canonical() == again.canonical()
    assert not _has_double_not(again.root)
    for labels in maps:
        assert again.evaluate(labels) == sel.evaluate(labels)


@given(generated)
def test_unique_id_is_hash_of_canonical(g: Gen) -> None:
    sel = parse_selector(g.text)
    assert sel.unique_id() == _independent_unique_id("s", sel.canonical())
    assert re.fullmatch(r"s:[A-Za-z0-9_-]{38}", sel.unique_id())


@given(generated, generated, label_maps)
def test_boolean_laws(a: Gen, b: Gen, labels: dict[str, str]) -> None:
    sa, sb = parse_selector(a.text), parse_selector(b.text)
    ea, eb = sa.evaluate(labels), sb.evaluate(labels)
    ta, tb = f"({a.text})", f"({b.text})"
    assert parse_selector(f"!{ta}").evaluate(labels) == (not ea)
    assert parse_selector(f"!!{ta}").evaluate(labels) == ea
    assert parse_selector(f"{ta} && {tb}").evaluate(labels) == (ea and eb)
    assert parse_selector(f"{ta} || {tb}").evaluate(labels) == (ea or eb)
    assert parse_selector(f"!({ta} && {tb})").evaluate(labels) == parse_selector(
        f"!{ta} || !{tb}"
    ).evaluate(labels)
    assert parse_selector(f"{ta} && all()").evaluate(labels) == ea
    assert parse_selector(f"{ta} || !all()").evaluate(labels) == ea


@given(st.lists(comparisons(), min_size=1, max_size=6), st.data())
def test_precedence_without_parentheses(terms: list[Gen], data: st.DataObject) -> None:
    ops = [data.draw(st.sampled_from(["&&", "||"])) for _ in terms[1:]]
    negs = [data.draw(st.booleans()) for _ in terms]
    text = terms[0].text if not negs[0] else "!" + terms[0].text
    for op, term, neg in zip(ops, terms[1:], negs[1:], strict=True):
        text += f" {op} " + ("!" if neg else "") + term.text

    def reference(labels: Labels) -> bool:
        # "||" splits the chain into groups of "&&"-joined (possibly negated) terms.
        values = [t.pred(labels) != n for t, n in zip(terms, negs, strict=True)]
        groups: list[list[bool]] = [[values[0]]]
        for op, v in zip(ops, values[1:], strict=True):
            if op == "||":
                groups.append([v])
            else:
                groups[-1].append(v)
        return any(all(g) for g in groups)

    sel = parse_selector(text)
    for labels in data.draw(st.lists(label_maps, min_size=1, max_size=5)):
        assert sel.evaluate(labels) == reference(labels), text


SELECTOR_ALPHABET = st.sampled_from(
    [*list("ab/.-_ \t(){},'\"!=&|%\n"), "has(", "all()", "global()", " in ", " not in ", "contains"]
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SELECTOR_ALPHABET, max_size=25).map("".join))
def test_fuzz_never_crashes(text: str) -> None:
    try:
        sel = parse_selector(text)
    except SelectorError as err:
        assert err.selector == text
        return
    again = parse_selector(sel.canonical())
    assert parse_selector(again.canonical()).canonical() == again.canonical()


@given(st.text(min_size=0, max_size=12), st.text(max_size=12))
def test_any_string_value(value: str, actual: str) -> None:
    assume("'" not in value or '"' not in value)
    quote = "'" if '"' in value else '"'
    sel = parse_selector(f"k == {quote}{value}{quote}")
    assert sel.evaluate({"k": value})
    assert sel.evaluate({"k": actual}) == (actual == value)
    assert parse_selector(sel.canonical()) == sel
