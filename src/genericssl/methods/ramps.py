"""Ramp-up schedules shared by the semi-supervised methods."""
import math


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - e/R)^2), e clipped to [0, R]; 1 when R = 0."""
    if length == 0:
        return 1.0
    current = min(max(current, 0.0), length)
    phase = 1.0 - current / length
    return float(math.exp(-5.0 * phase * phase))
