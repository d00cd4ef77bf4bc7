"""Learning-rate schedules shared by the stages' optimizers."""

from __future__ import annotations

import keras

# The cosine decays to this share of the peak rate at the last step.
FINAL_SHARE = 0.05


def warmup_cosine(peak: float, warmup_share: float, total_steps: int):
    """Linear warmup from 0 to `peak` over `warmup_share` of `total_steps`, then cosine
    decay to 5% of it at `total_steps`: the NSMC text recipe (`text.warmup_share`) and
    `train.warmup_share` for the other stages.

    Example:
        >>> keras.optimizers.Adam(warmup_cosine(2e-3, 0.05, epochs * steps_per_epoch))
    """
    total_steps = max(1, int(total_steps))
    warmup = max(1, int(round(warmup_share * total_steps)))
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, total_steps - warmup), alpha=FINAL_SHARE, warmup_target=float(peak), warmup_steps=warmup)
