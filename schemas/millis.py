"""Milliseconds to three decimals, as results carry them: ``round(x, 3)``, exactly, cheaper.

``round(x, 3)`` on a float finds the correctly rounded decimal of ``x`` (its exact binary
value, ties to even) through CPython's decimal conversion and reads it back: about 2,800
instructions, twice per result record. :func:`round_ms` gives the same float for the
usual value (a latency or a queue time of more than 0 and under 10⁶ ms) with a few float
operations, and asks ``round`` itself for any other:

- ``ms = x * 1000.0`` is the exact product rounded once: within 6·10⁻⁸ of it below 10⁹.
- ``ms + 1.5·2⁵² - 1.5·2⁵²`` is ``ms`` rounded to an integer ``r`` (a float in
  [2⁵², 2⁵³) holds integers only; the default rounding mode rounds to the nearest).
- ``ms - r`` is exact (the two are within a factor of two, or ``r`` is 0). When it is
  more than 10⁻⁶ away from ±0.5, the exact product is nearer to ``r`` than to any other
  integer as well, so ``r`` is the decimal ``round`` finds, in thousandths; near a tie
  (or outside the range, or for 0, -0.0, NaN, infinities) ``round`` decides.
- ``r / 1000.0`` is the float nearest to ``r`` thousandths (IEEE division rounds
  correctly), which is what ``round`` reads its decimal back to.
"""

from __future__ import annotations

from typing import Final

_TO_INTEGER: Final = 6755399441055744.0  # 1.5 * 2**52: added and taken off, rounds to an integer
_NEAR_TIE: Final = 0.499999  # beyond it the rounding of ms and of the exact product can differ


def round_ms(x: float) -> float:
    """Return ``round(x, 3)`` (the same float, bit for bit)."""
    ms = x * 1000.0
    r = ms + 6755399441055744.0 - 6755399441055744.0  # (_TO_INTEGER; a constant here)
    if 0.0 < ms < 1e9 and -0.499999 < ms - r < 0.499999:  # (_NEAR_TIE)
        return r / 1000.0
    return round(x, 3)
