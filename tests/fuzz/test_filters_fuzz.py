"""Lambda filter patterns against an independent reference evaluation.

Patterns and documents come from one small grammar (keys ``a b c``, short strings over
``aAbB``, small integers, booleans, null, arrays of scalars, nested objects), so that
generated patterns hit generated documents often. The reference below is written from
Lambda's documented rules, not from eventrun/_filters.py:

* a pattern matches when every field it names matches (AND); ``$or`` needs one branch;
* a field named in the pattern must be present, unless a matcher is ``{"exists": false}``;
* a list of matchers is OR; an array value matches when any element matches;
* literals compare by type and value (strings case-sensitive; numbers as numbers);
* prefix / suffix / equals-ignore-case apply to strings only; numeric to numbers only;
* anything-but matches any present value not equal to one of its values.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventrun.dispatch._filters import FilterError, RecordFilter
from tests._hypothesis import examples

KEYS = st.sampled_from(["a", "b", "c"])
TEXT = st.text(alphabet="aAbB", max_size=3)
NUMBER = st.integers(-3, 3)
SCALAR = st.one_of(TEXT, NUMBER, st.booleans(), st.none())
VALUE = st.one_of(SCALAR, st.lists(SCALAR, min_size=1, max_size=3))
DOCUMENT = st.recursive(
    st.dictionaries(KEYS, VALUE, max_size=3),
    lambda inner: st.dictionaries(KEYS, st.one_of(VALUE, inner), max_size=3),
    max_leaves=8,
)
OPS = ["=", "<", "<=", ">", ">="]
MATCHER = st.one_of(
    SCALAR,
    st.builds(lambda s: {"prefix": s}, TEXT),
    st.builds(lambda s: {"suffix": s}, TEXT),
    st.builds(lambda s: {"equals-ignore-case": s}, TEXT),
    st.builds(lambda v: {"anything-but": v}, st.one_of(TEXT, NUMBER)),
    st.builds(lambda v: {"anything-but": v}, st.lists(st.one_of(TEXT, NUMBER), min_size=1)),
    st.builds(
        lambda c: {"numeric": [x for pair in c for x in pair]},
        st.lists(st.tuples(st.sampled_from(OPS), NUMBER), min_size=1, max_size=2),
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
)
PATTERN = st.recursive(
    st.dictionaries(KEYS, st.lists(MATCHER, min_size=1, max_size=3), min_size=1, max_size=2),
    lambda inner: st.one_of(
        st.dictionaries(KEYS, inner, min_size=1, max_size=2),
        st.builds(lambda subs: {"$or": subs}, st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=6,
)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same(expected: Any, v: Any) -> bool:
    if expected is None or isinstance(expected, bool):
        return v is expected
    if _is_num(expected):
        return _is_num(v) and v == expected
    return isinstance(v, str) and v == expected


def _compare(op: str, v: float, bound: float) -> bool:
    return {
        "=": v == bound,
        "<": v < bound,
        "<=": v <= bound,
        ">": v > bound,
        ">=": v >= bound,
    }[op]


def ref_scalar(matcher: Any, v: Any) -> bool:
    if not isinstance(matcher, dict):
        return _same(matcher, v)
    [(op, arg)] = matcher.items()
    if op == "exists":
        return bool(arg)
    if op == "anything-but":
        banned = arg if isinstance(arg, list) else [arg]
        return all(not _same(b, v) for b in banned)
    if op == "numeric":
        pairs = list(zip(arg[::2], arg[1::2], strict=True))
        return _is_num(v) and all(_compare(o, v, b) for o, b in pairs)
    if not isinstance(v, str):
        return False
    if op == "prefix":
        return v.startswith(arg)
    if op == "suffix":
        return v.endswith(arg)
    return v.casefold() == arg.casefold()  # equals-ignore-case


def ref_match(pattern: dict[str, Any], doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    for key, rule in pattern.items():
        if key == "$or":
            ok = any(ref_match(sub, doc) for sub in rule)
        elif key not in doc:
            ok = isinstance(rule, list) and {"exists": False} in rule
        elif isinstance(rule, dict):
            values = doc[key] if isinstance(doc[key], list) else [doc[key]]
            ok = any(ref_match(rule, v) for v in values)
        else:
            values = doc[key] if isinstance(doc[key], list) else [doc[key]]
            ok = any(ref_scalar(m, v) for m in rule for v in values)
        if not ok:
            return False
    return True


@settings(max_examples=examples(1000), deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=2), DOCUMENT)
def test_filters_agree_with_the_reference(patterns: list[dict[str, Any]], doc: Any) -> None:
    expected = any(ref_match(p, doc) for p in patterns)
    assert RecordFilter(patterns).matches(doc) == expected


@settings(max_examples=examples(500), deadline=None)
@given(
    st.recursive(
        SCALAR,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_any_json_value_as_pattern_compiles_or_raises_filter_error(pattern: Any) -> None:
    """Arbitrary JSON as a pattern: a FilterError at compile time or a filter that
    evaluates without raising."""
    try:
        compiled = RecordFilter([pattern])
    except FilterError:
        return
    compiled.matches({"a": 1, "b": ["x", None], "c": {"a": "y"}})
