"""Medians and paired ratios: the only statistics the tables use."""
from __future__ import annotations

import statistics


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired_ratios(measured: list[float | None], baseline: list[float | None]) -> list[float]:
    """Per-repetition ratios measured[i] / baseline[i].  Pairing each
    measurement with the baseline taken next to it in time cancels slow drifts
    in machine load that a ratio of two medians would keep."""
    return [m / b for m, b in zip(measured, baseline) if m is not None and b]


def spread(values: list[float]) -> tuple[float, float] | None:
    return (min(values), max(values)) if values else None


def si(value: float | None, unit: str = "") -> str:
    """905123 -> '905k', with an optional unit."""
    if value is None:
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"
