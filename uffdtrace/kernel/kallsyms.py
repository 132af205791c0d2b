"""/proc/kallsyms lookups: does a function exist, and under which name?"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Symbol:
    name: str      # the symbol as the kernel spells it (may carry .isra.0 etc.)
    kind: str      # 'T' global text, 't' static text


def find_functions(names: list[str], path: str = "/proc/kallsyms") -> dict[str, Symbol | None]:
    """Text symbols for each name; a compiler-cloned `name.suffix` counts."""
    wanted = set(names)
    found: dict[str, Symbol] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "Tt":
                continue
            sym = parts[2]
            base = sym.split(".", 1)[0]
            if base in wanted and (base not in found or sym == base):
                found[base] = Symbol(sym, parts[1])
    return {name: found.get(name) for name in names}
