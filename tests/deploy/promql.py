"""The metric names a PromQL expression reads (good enough for the dashboards' and rules' expressions)."""

from __future__ import annotations

import re

PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "deriv", "max", "min", "avg", "by", "without", "histogram_quantile",
    "clamp_min", "clamp_max", "ignoring", "group_left", "group_right", "on", "le", "count", "and", "or",
    "unless", "vector", "absent", "offset", "bool",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"e\d*", w)}
