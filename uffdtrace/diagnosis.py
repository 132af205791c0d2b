"""What a diagnosis says about one move: cause, evidence level, failing
address, underlying cause of a partial move, culprit and notes.

Its own module so both rule engines (diagnose.py, kernel_evidence.py) and
every consumer import it without an import cycle.  Explanations and
remedies are not stored here: they come from the taxonomy when written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .culprits import Culprit, culprit_from_json
from .taxonomy import CAUSES, CauseCode, Evidence


@dataclass(frozen=True)
class Diagnosis:
    cause: CauseCode
    evidence: Evidence
    fail_addr: int | None = None
    underlying: CauseCode | None = None     # for `partial`: what stopped it
    culprit: Culprit | None = None          # pinner, KSM merge, ...
    notes: list[str] = field(default_factory=list)

    @property
    def effective_cause(self) -> CauseCode:
        """The cause to act on: the underlying one for a partial move."""
        return self.underlying or self.cause

    def to_json(self) -> dict:
        c = CAUSES[self.effective_cause]
        return {"cause": self.cause, "underlying": self.underlying,
                "evidence": self.evidence, "fail_addr": self.fail_addr,
                "culprit": self.culprit.to_json() if self.culprit is not None else None,
                "explanation": c.explanation, "remedy": c.remedy, "notes": self.notes}

    @classmethod
    def from_json(cls, d: dict) -> Diagnosis:
        """A diagnosis read back from a trace.  Codes stay plain strings: a
        trace may name a cause this version does not know."""
        return cls(d["cause"], d["evidence"], d.get("fail_addr"), d.get("underlying"),
                   culprit_from_json(d.get("culprit")), list(d.get("notes") or ()))
