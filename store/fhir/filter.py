"""The grammar of FHIR's `_filter` search parameter (R5 search_filter.html) -> a syntax tree.
Pure: no I/O, and no knowledge of the parameters (store/mongo/search.py compiles the tree into the
same store filters the plain search arguments make).

    filter    = term (("and" / "or") term)*     left to right, no precedence between them
    term      = "not" "(" filter ")" / "(" filter ")" / paramExp
    paramExp  = paramName SP compareOp SP compValue
    compValue = JSON string / token             (a token: non-space characters but ")" "]")

Chained paths (`subject.name`, `related[...].target`) parse far enough to be refused by name.
Every error is a `FilterError` with the 1-based character position and the rule broken."""

from __future__ import annotations

import json
from dataclasses import dataclass

OPERATORS = (
    "eq",
    "ne",
    "co",
    "sw",
    "ew",
    "gt",
    "lt",
    "ge",
    "le",
    "ap",
    "sa",
    "eb",
    "pr",
    "po",
    "ss",
    "sb",
    "in",
    "ni",
    "re",
)
MAX_DEPTH = 8  # nested parentheses, `not`, and and/or alternations, each one level


class FilterError(ValueError):
    """A `_filter` expression that breaks the grammar or a limit, at `position` (1-based)."""

    def __init__(self, position: int, rule: str) -> None:
        super().__init__(f"at character {position}: {rule}")
        self.position = position
        self.rule = rule


@dataclass(frozen=True)
class Comparison:
    """`name op value`: one comparison; `at` is where its name starts (0-based)."""

    name: str
    op: str
    value: str
    at: int


@dataclass(frozen=True)
class Logic:
    """`and` or `or` over two or more parts."""

    op: str
    parts: tuple[Node, ...]
    at: int


@dataclass(frozen=True)
class Not:
    """`not (part)`."""

    part: Node
    at: int


Node = Comparison | Logic | Not


def depth(node: Node) -> int:
    """Levels of nesting: a comparison is 1."""
    if isinstance(node, Comparison):
        return 1
    if isinstance(node, Not):
        return 1 + depth(node.part)
    return 1 + max(depth(part) for part in node.parts)


def tests(node: Node) -> list[Comparison]:
    """Every comparison in the tree, left to right."""
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Not):
        return tests(node.part)
    return [test for part in node.parts for test in tests(part)]


def _is_name_start(char: str) -> bool:
    return char == "_" or (char.isascii() and char.isalpha())


def _is_name_char(char: str) -> bool:
    return len(char) == 1 and (char in "_-" or (char.isascii() and char.isalnum()))


class _Parser:
    def __init__(self, text: str, max_terms: int | None, max_value_length: int | None) -> None:
        self.text = text
        self.at = 0
        self.max_terms = max_terms
        self.max_value_length = max_value_length
        self.terms = 0

    def error(self, rule: str, at: int | None = None) -> FilterError:
        return FilterError((self.at if at is None else at) + 1, rule)

    def skip_space(self) -> bool:
        start = self.at
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1
        return self.at > start

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def word(self) -> str:
        """The letters here (a keyword or an operator), without consuming them."""
        end = self.at
        while end < len(self.text) and self.text[end].isalpha():
            end += 1
        return self.text[self.at : end]

    def filter(self, level: int) -> Node:
        if level > MAX_DEPTH:
            raise self.error(f"the expression nests deeper than {MAX_DEPTH} levels")
        node = self.term(level)
        while True:
            self.skip_space()
            if self.at >= len(self.text) or self.peek() == ")":
                return node
            op_at = self.at
            op = self.word()
            if op not in ("and", "or"):
                shown = op or self.peek()
                hint = " (keywords are lowercase)" if op.lower() in ("and", "or") else ""
                raise self.error(f"expected 'and', 'or', ')' or the end, not '{shown}'{hint}")
            self.at += len(op)
            if self.peek() not in ("(", "") and not self.peek().isspace():
                raise self.error(f"'{op}' must be followed by a space or '('")
            part = self.term(level)
            if isinstance(node, Logic) and node.op == op:
                node = Logic(op, (*node.parts, part), node.at)
            else:
                node = Logic(op, (node, part), op_at)
            if level - 1 + depth(node) > MAX_DEPTH:
                raise self.error(
                    f"the expression nests deeper than {MAX_DEPTH} levels "
                    "(each change between 'and' and 'or' adds one; use "
                    "parentheses to group)",
                    op_at,
                )

    def group(self, level: int) -> Node:
        """`( filter )`, the opening parenthesis here."""
        open_at = self.at
        self.at += 1
        node = self.filter(level + 1)
        self.skip_space()
        if self.peek() != ")":
            raise self.error(f"the '(' at character {open_at + 1} is never closed")
        self.at += 1
        return node

    def term(self, level: int) -> Node:
        self.skip_space()
        start = self.at
        if self.peek() == "(":
            return self.group(level)
        if self.word() == "not":
            self.at += 3
            self.skip_space()
            if self.peek() != "(":
                raise self.error("'not' takes a filter in parentheses: not (...)")
            return Not(self.group(level + 1), start)
        return self.comparison()

    def comparison(self) -> Comparison:
        start = self.at
        if not _is_name_start(self.peek()):
            shown = self.peek() or "the end"
            raise self.error(f"expected a search parameter name, '(' or 'not (', not '{shown}'")
        while _is_name_char(self.peek()):
            self.at += 1
        name = self.text[start : self.at]
        if self.peek() == ":":
            # R5's grammar has no modifiers (a name is letters, digits, `_` and `-`); the
            # plain arguments take the one this server has, `:identifier`.
            end = self.at + 1
            while _is_name_char(self.text[end : end + 1]):
                end += 1
            modifier = self.text[self.at + 1 : end]
            hint = (
                "; the :identifier searches are search arguments of their own "
                "(patient_identifier, based_on_identifier, ...)"
                if modifier == "identifier"
                else ""
            )
            raise self.error(
                f"'{name}:{modifier}': _filter takes no search modifiers (R5's grammar has none)"
                + hint
            )
        if self.peek() in (".", "["):
            raise self.error(
                f"'{self.peek()}' after '{name}': chained parameters and "
                "[filter] paths are not supported; ImagingStudy's parameters are "
                "compared directly"
            )
        if not self.skip_space():
            raise self.error(f"expected a space after the parameter name '{name}'")
        op_at = self.at
        op = self.word()
        if not op:
            raise self.error(f"expected an operator after '{name}': one of {' '.join(OPERATORS)}")
        self.at += len(op)
        if op not in OPERATORS:
            hint = " (operators are lowercase)" if op.lower() in OPERATORS else ""
            raise self.error(
                f"unknown operator '{op}'{hint}; operators: {' '.join(OPERATORS)}", op_at
            )
        if not self.skip_space():
            raise self.error(f"expected a space and a value after '{name} {op}'")
        value_at = self.at
        value = self.value()
        if self.max_value_length is not None and len(value) > self.max_value_length:
            raise self.error(
                f"a value may be at most {self.max_value_length} characters; "
                f"this one has {len(value)}",
                value_at,
            )
        self.terms += 1
        if self.max_terms is not None and self.terms > self.max_terms:
            raise self.error(
                f"at most {self.max_terms} comparisons are allowed in one "
                "_filter; split the search",
                start,
            )
        return Comparison(name, op, value, start)

    def value(self) -> str:
        if self.peek() == '"':
            try:
                value, end = json.JSONDecoder().raw_decode(self.text, self.at)
            except json.JSONDecodeError as error:
                raise self.error(f"a quoted value must be a JSON string: {error.msg}") from None
            self.at = end
            return str(value)
        start = self.at
        while (
            self.at < len(self.text)
            and not self.text[self.at].isspace()
            and self.text[self.at] not in ")]"
        ):
            self.at += 1
        if self.at == start:
            raise self.error("expected a value: a JSON string or a token (no spaces, ')' or ']')")
        return self.text[start : self.at]


def parse(text: str, max_terms: int | None = None, max_value_length: int | None = None) -> Node:
    """The syntax tree of a `_filter` expression, within the limits given (and MAX_DEPTH);
    FilterError otherwise."""
    parser = _Parser(text, max_terms, max_value_length)
    if not text.strip():
        raise FilterError(1, "the expression is empty")
    node = parser.filter(1)
    if parser.at < len(text):  # only a stray ')' stops the top level early
        raise parser.error("this ')' has no matching '('")
    return node
