"""When do many complaints share one cause? Pure rules, no I/O.

- merchant: at least `merchant_min_complaints` complaints naming the same merchant
  within `window`;
- category: at least `category_min_complaints` complaints of one category within
  `window`, and more than `spike_factor` times that category's usual count per window
  over the preceding `baseline`.
An incident stays open while complaints keep coming: one arriving within `window` of its
last complaint joins it (incident.updated) instead of opening another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class IncidentPolicy:
    window: timedelta = timedelta(minutes=30)
    baseline: timedelta = timedelta(hours=24)
    merchant_min_complaints: int = 5
    category_min_complaints: int = 20
    spike_factor: float = 3.0

    def merchant_cluster(self, complaints_in_window: int) -> bool:
        return complaints_in_window >= self.merchant_min_complaints

    def category_spike(self, complaints_in_window: int, complaints_in_baseline: int) -> bool:
        """`complaints_in_baseline` counts the category over `baseline` before the window."""
        if complaints_in_window < self.category_min_complaints:
            return False
        windows_in_baseline = max(self.baseline / self.window, 1.0)
        usual_per_window = complaints_in_baseline / windows_in_baseline
        return complaints_in_window > self.spike_factor * usual_per_window


def merchant_key(merchant: str | None) -> str | None:
    """'  Example  MART ' and 'example mart' are one merchant."""
    if not merchant or not merchant.strip():
        return None
    return re.sub(r"\s+", " ", merchant.strip()).casefold()
