"""(epsilon, delta) of `algorithms.dp`'s per-client Gaussian mechanism over a run's rounds, from
Google's dp-accounting (RDP accountant).

Every real client uploads in every round (sampling rate 1), so R rounds of an upload with P
private parts are P R compositions of the Gaussian mechanism, without amplification by sampling.
Each part is clipped to C around a public point, so replacing the client's whole dataset moves it
by at most 2C: against noise std noise_multiplier * C that is a Gaussian mechanism of noise
multiplier noise_multiplier / 2 at sensitivity 1 (`algorithms/dp.py`).
"""

import math

from fedjax_syn.core.errors import check

SENSITIVITY = 2.0  # in units of clip_norm: any two datasets of one client (replacement)


def epsilon(noise_multiplier: float, rounds: int, delta: float, parts: int = 1) -> float:
    """The local epsilon at `delta` of one client's `rounds` uploads of `parts` private parts
    each; inf without noise."""
    check(rounds >= 1, f"rounds must be >= 1, got {rounds}")
    check(parts >= 1, f"parts must be >= 1, got {parts}")
    check(0 < delta < 1, f"delta must be in (0, 1), got {delta}")
    if noise_multiplier <= 0:
        return math.inf
    import dp_accounting  # seconds to import: only where an epsilon is asked for
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(noise_multiplier / SENSITIVITY)
    accountant.compose(event, rounds * parts)
    return float(accountant.get_epsilon(delta))
