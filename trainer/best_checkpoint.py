"""Which validated epoch best.pth holds: the rule, applied to the rows of validation.csv.

The rule (the one that picked the shipped demo model): among the validated epochs whose --val-TH
run reuses at least 25% of the object-frames and loses at most 0.03 J&F against TH 1.0, the one
with the highest J&F at TH 1.0; if no epoch qualifies, the one with the highest J&F at --val-TH.
With --val-TH 1.0 there is no reuse to weigh: the highest J&F at TH 1.0. Ties go to the earlier
epoch. A model that reuses often without losing accuracy is what the reuse gate is for; among
those, the accuracy of the full path decides, because it is the steadier measure of the
segmentation the gate reuses.
"""
from __future__ import annotations

from dataclasses import dataclass

# A validated epoch's rows: TH -> {"J&F", "J", "F", "reuse_rate"}; a table: epoch -> its rows.
Rows = dict[float, dict[str, float]]


@dataclass(frozen=True)
class BestRule:
    min_reuse: float = 0.25  # the --val-TH run reuses at least this share of the object-frames
    max_loss: float = 0.03  # ... and loses at most this much J&F against TH 1.0

    def describe(self, tau: float) -> str:
        if tau == 1.0:
            return "the highest J&F at TH 1 (--val-TH 1: no reuse to weigh); ties: the earlier epoch"
        return (f"the highest J&F at TH 1 among the validated epochs whose TH {tau:g} run reuses at least "
                f"{self.min_reuse:.0%} of the object-frames and loses at most {self.max_loss:g} J&F against TH 1; "
                f"if none does, the highest J&F at TH {tau:g}; ties: the earlier epoch")

    def choose(self, table: dict[int, Rows], tau: float) -> tuple[int, str] | None:
        """(epoch, why) of the best validated epoch; None when no epoch has the rows the rule needs
        (TH 1.0 and, unless it is 1.0, --val-TH: an epoch validated with another --val-TH does not count)."""
        if tau == 1.0:
            full = {epoch: rows[1.0] for epoch, rows in table.items() if 1.0 in rows}
            if not full:
                return None
            epoch = _highest(full)
            return epoch, f"the highest J&F at TH 1 ({full[epoch]['J&F']:.3f}) of {len(full)} validated epoch(s)"
        pairs = {epoch: (rows[1.0], rows[tau]) for epoch, rows in table.items() if 1.0 in rows and tau in rows}
        if not pairs:
            return None
        qualifying = {epoch: full for epoch, (full, reusing) in pairs.items()
                      if reusing["reuse_rate"] >= self.min_reuse and full["J&F"] - reusing["J&F"] <= self.max_loss}
        if qualifying:
            epoch = _highest(qualifying)
            full, reusing = pairs[epoch]
            return epoch, (f"the highest J&F at TH 1 ({full['J&F']:.3f}) of the {len(qualifying)} of {len(pairs)} "
                           f"validated epoch(s) whose TH {tau:g} run reuses at least {self.min_reuse:.0%} and loses "
                           f"at most {self.max_loss:g} J&F (at TH {tau:g}: J&F {reusing['J&F']:.3f}, reuse rate "
                           f"{reusing['reuse_rate']:.3f})")
        epoch = _highest({e: reusing for e, (_, reusing) in pairs.items()})
        return epoch, (f"none of the {len(pairs)} validated epoch(s) reuses at least {self.min_reuse:.0%} at TH "
                       f"{tau:g} while losing at most {self.max_loss:g} J&F, so the highest J&F at TH {tau:g} "
                       f"({pairs[epoch][1]['J&F']:.3f})")


def _highest(scores: dict[int, dict[str, float]]) -> int:
    """The epoch with the highest J&F; the earliest of equal ones."""
    return max(scores, key=lambda epoch: (scores[epoch]["J&F"], -epoch))
