"""Small arithmetic over a config's values: the language shapes, conditions and metadata are written in.

A family's spec says "heads * head_dim" or "layer >= first_k_dense_replace" rather than a Python
function, so specs stay data (readable, listable in docs, checkable against transformers) and no
spec can run arbitrary code. Allowed: names, numbers, strings, + - * // % ** (ints), comparisons,
and/or/not, `x if c else y`, `[f(x) for x in xs]`, `x[i]` (a list's entry or a nested config's value; a
nested config that is null or lacks the key is a missing value, as a key the config lacks is), and the
calls min, max, int, float, bool, len, range,
get(name, default), uniform(x): x, or the one value every entry of the list x holds (None when they
differ), for a per-layer list a runtime takes as one value; per_layer(x, n): the other way, x as n
per-layer values (x itself when it is a list already); and normal_ppf(p): the standard normal
distribution's quantile (-inf at 0), which llama.cpp's converter writes for Gemma 3n's activation sparsity.
"""
from __future__ import annotations

import ast
import math
import operator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..core.errors import ModelConversionError

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.Pow: operator.pow, ast.Div: operator.truediv}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}


def _uniform(value: Any) -> Any:
    """A value that may be given per layer (Hunyuan's `moe_topk`), as one value when every layer has it."""
    if not isinstance(value, (list, tuple)):
        return value
    return value[0] if value and all(v == value[0] for v in value) else None


def _per_layer(value: Any, layers: int) -> list:
    """A value a config may give once or per layer (Gemma 3n's `intermediate_size`), as the per-layer list."""
    return list(value) if isinstance(value, (list, tuple)) else [value] * layers


def _normal_ppf(p: float) -> float:
    """The standard normal quantile of p, with its limits at 0 and 1 (a sparsity of 0 is a cut-off at -inf)."""
    from statistics import NormalDist
    return -math.inf if p <= 0 else math.inf if p >= 1 else NormalDist().inv_cdf(p)


_CALLS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "int": int, "float": float, "bool": bool, "len": len,
                                         "range": range, "uniform": _uniform, "per_layer": _per_layer,
                                         "normal_ppf": _normal_ppf}


class ExpressionError(ValueError):
    """An expression a spec wrote is not in the small language, or names a value the config lacks."""


@contextmanager
def config_gaps(source: str | Path) -> Iterator[None]:
    """A value a spec needs and the source's config lacks is a fault of the input: one line naming the
    source and the value (exit 1), not an internal error."""
    try:
        yield
    except MissingConfigValue as exc:
        raise ModelConversionError(f"its config does not give {exc.name!r}, which its architecture needs "
                                   f"({exc.text})", source) from exc


class MissingConfigValue(ExpressionError):
    """A spec's expression names a value the model's config does not give: the input's fault, not the spec's."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{text!r} names {name!r}, which this config does not give")
        self.name, self.text = name, text


@lru_cache(maxsize=4096)
def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"not an expression: {text!r}") from exc
    return tree


def evaluate(text: str | int | float | bool | None, names: Mapping[str, Any]) -> Any:
    """The value of `text` with `names` bound; a non-string is its own value."""
    if not isinstance(text, str):
        return text
    return _eval(_parse(text), names, text)


def _eval(node: ast.expr, names: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("None", "True", "False"):
            return {"None": None, "True": True, "False": False}[node.id]
        if node.id not in names:
            raise MissingConfigValue(node.id, text)
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, names, text), _eval(node.right, names, text))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names, text)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, names, text) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names, text)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, names, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, names, text) else node.orelse, names, text)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, names, text) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [_eval(a, names, text) for a in node.args]
        if node.func.id == "get":
            return names.get(args[0], args[1] if len(args) > 1 else None)
        if node.func.id in _CALLS:
            return _CALLS[node.func.id](*args)
    if isinstance(node, ast.ListComp) and len(node.generators) == 1 and isinstance(node.generators[0].target, ast.Name):
        loop = node.generators[0]
        scopes = ({**names, loop.target.id: item} for item in _eval(loop.iter, names, text))
        return [_eval(node.elt, scope, text) for scope in scopes
                if all(_eval(condition, scope, text) for condition in loop.ifs)]
    if isinstance(node, ast.Subscript):
        value, key = _eval(node.value, names, text), _eval(node.slice, names, text)
        if value is None or isinstance(value, Mapping) and key not in value:     # a nested config's gap
            raise MissingConfigValue(ast.unparse(node), text)
        return value[key]
    raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed in a spec expression")
