"""Building blocks of the top model: rates over a sliding window of trace
time, and latency histograms cheap enough to update 100,000 times a second."""
from __future__ import annotations

from collections import deque

# A rate meter keeps a cumulative sample at most this often (trace seconds):
# enough resolution for a 1 s window, and O(1) work per event.
SAMPLE_EVERY_S = 0.25
MAX_SAMPLES = 256     # 64 s of samples: windows are never longer than that


class RateMeter:
    """A cumulative count and its rate over the last `window` seconds.

    The rate is exact over (t_sample, now] for the newest sample at least a
    window old; before the meter has history that old, it counts from zero
    at `now - window` (what was not seen is not invented)."""

    __slots__ = ("total", "_samples", "_last_t", "_newest_t")

    def __init__(self):
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self._last_t = float("-inf")      # of the newest sample
        self._newest_t = float("-inf")    # of the newest count, sampled or not

    def add(self, t: float, n: int = 1):
        self.total += n
        if t > self._newest_t:
            self._newest_t = t
        if t - self._last_t >= SAMPLE_EVERY_S:
            self._samples.append((t, self.total))
            self._last_t = t

    def set(self, t: float, total: int):
        """A cumulative value read from elsewhere (an in-kernel counter)."""
        self.total = total
        self._samples.append((t, total))
        self._last_t = self._newest_t = t

    def rate(self, now: float, window: float, since: float = float("-inf")) -> float:
        """Per second over the last `window` seconds ending at `now`; the
        window never starts before `since` (the start of the trace).
        Forgets samples older windows would need: `now` only moves forward."""
        start = max(now - window, since)
        if now <= start or self._newest_t <= start:
            return 0.0          # nothing counted inside the window
        s = self._samples
        while len(s) >= 2 and s[1][0] <= start:
            s.popleft()
        # The newest sample at or before `start`; with none, everything
        # counted happened after `start` (the first add always samples).
        base_t, base = s[0] if s and s[0][0] <= start else (start, 0)
        return max(self.total - base, 0) / (now - base_t)


def latency_bucket(ns: int) -> int:
    """Log-linear bucket: 4 per power of two, so a percentile read from the
    bucket's middle is within about 12% of the true value."""
    if ns < 4:
        return max(ns, 0)
    b = ns.bit_length()
    return b * 4 + (ns >> (b - 3)) - 4


def bucket_bounds(key: int) -> tuple[int, int]:
    """[low, high) nanoseconds of a latency_bucket key."""
    if key < 4:
        return key, key + 1
    b, sub = divmod(key, 4)
    return (4 + sub) << (b - 3), (5 + sub) << (b - 3)


class LatencyHistogram:
    __slots__ = ("counts", "total", "version")

    def __init__(self):
        self.counts: dict[int, int] = {}
        self.total = 0
        self.version = 0      # bumped on change: callers cache percentiles

    def add(self, ns: int, n: int = 1):
        """`n` values of `ns` (a sampled move stands for n of them)."""
        k = latency_bucket(ns)
        self.counts[k] = self.counts.get(k, 0) + n
        self.total += n
        self.version += 1

    def percentile(self, q: float) -> float | None:
        """Estimated q-quantile (0 < q <= 1) in ns, or None when empty."""
        if not self.total:
            return None
        rank = max(1, -(-int(q * self.total * 1000) // 1000))   # ceil without floats drifting
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                low, high = bucket_bounds(key)
                return (low + high) / 2
        return None   # unreachable: counts sum to total


def log2_bucket(ns: int) -> int:
    """The kernel's histogram bucket (bcc bpf_log2l): b counts [2**(b-1), 2**b)."""
    return max(ns, 0).bit_length()
