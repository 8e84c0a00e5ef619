"""One request's synthesis parameters, checked (both VITS engines take them; their rows are padded by
`tritonize.runtime.pooling.pad_vits_batch`, the converter's parity batch too)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritonize.runtime.triton import InputError, input_array

PARAM_RANGES = {"SPEAKING_RATE": (0.0, 10.0, False), "NOISE_SCALE": (0.0, 5.0, True), "NOISE_SCALE_DURATION": (0.0, 5.0, True)}


@dataclass
class Voice:
    """One request's synthesis parameters, checked."""

    speaking_rate: float
    noise_scale: float
    noise_scale_duration: float
    seed: int

    @classmethod
    def from_request(cls, request) -> "Voice":
        values = {}
        for name, (low, high, low_ok) in PARAM_RANGES.items():
            v = float(input_array(request, name).reshape(-1)[0])
            if not (low <= v <= high if low_ok else low < v <= high) or not np.isfinite(v):
                bound = "[" if low_ok else "("
                raise InputError(f"{name} must be in {bound}{low:g}, {high:g}], got {v:g}")
            values[name] = v
        seed = int(input_array(request, "SEED").reshape(-1)[0])
        return cls(values["SPEAKING_RATE"], values["NOISE_SCALE"], values["NOISE_SCALE_DURATION"], seed)
