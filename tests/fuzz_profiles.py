"""The hypothesis profiles the property tests share: `ci` (reproducible, small enough for CI)
and `deep` (KFA_FUZZ_PROFILE=deep, for a long run by hand)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_INPUTS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          print_blob=True, suppress_health_check=_SLOW_INPUTS)
settings.register_profile("deep", max_examples=20000, deadline=None,
                          suppress_health_check=_SLOW_INPUTS)
FUZZ = settings.get_profile(os.environ.get("KFA_FUZZ_PROFILE", "ci"))
