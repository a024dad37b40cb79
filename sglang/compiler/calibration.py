"""Measured runtime costs the compiler's cost model reads: one small JSON table per device.

    {"format": "sglang-calibration", "device": "NVIDIA H200", "model": "...",
     "prefill_token_s": 2.1e-05, "decode_token_s": 0.0071, "call_overhead_s": 0.0012}

* prefill_token_s: seconds to prefill one more prompt token (uncached);
* decode_token_s: seconds per generated token of one sequence (a short gen's round trip is mostly this);
* call_overhead_s: what one more native call costs besides its tokens (a round trip, scheduling, HTTP).

`benchmarks/calibrate.py` measures these on a running engine and writes the table (`save_calibration`);
`sglc compile --calibration PATH` (or `$SGLANG_CALIBRATION`) reads it. Without one the compiler uses
`DEFAULT`, a mid-size model on one GPU behind HTTP, so plans do not depend on what machine compiled them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

CALIBRATION_FORMAT = "sglang-calibration"
ENV = "SGLANG_CALIBRATION"


@dataclass(frozen=True)
class Calibration:
    prefill_token_s: float = 5e-5
    decode_token_s: float = 1e-2
    call_overhead_s: float = 1e-3
    device: str = "default"
    model: str | None = None
    source: str = "built-in defaults"  # where the numbers came from (a path), for --explain

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "source"}
        return {"format": CALIBRATION_FORMAT, **out}


DEFAULT = Calibration()
_NUMBERS = ("prefill_token_s", "decode_token_s", "call_overhead_s")


def calibration_from_json(data: Any, source: str) -> Calibration:
    """A table from its JSON; a missing number keeps its default, a bad one is a ValueError naming it."""
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"{source} is not a calibration table (format {CALIBRATION_FORMAT!r})")
    known = {f.name for f in fields(Calibration)} - {"source"}
    values = {k: v for k, v in data.items() if k in known}
    for k in _NUMBERS:
        v = values.get(k, getattr(DEFAULT, k))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise ValueError(f"{source}: {k} must be a number >= 0, got {v!r}")
        values[k] = float(v)
    return replace(DEFAULT, **values, source=source)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The table at `path`, else at $SGLANG_CALIBRATION, else the defaults."""
    path = path or os.environ.get(ENV) or None
    if path is None:
        return DEFAULT
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no calibration table at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read calibration table {path}: {e}") from None
    return calibration_from_json(data, str(path))


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cal.to_json(), indent=2) + "\n", encoding="utf-8")
    return p


def fit_calibration(short_call_s: float, long_prefill_s: float, prompt_tokens: int, decode_s: float,
                    decode_tokens: int, device: str, model: str | None = None) -> Calibration:
    """Costs from three medians: a 1-token call (overhead), a `prompt_tokens` prefill and a `decode_tokens`
    decode (each with one short prompt); differences are clamped at 0 (noise on a fast device)."""
    prefill = max(long_prefill_s - short_call_s, 0.0) / max(prompt_tokens - 1, 1)
    decode = max(decode_s - short_call_s, 0.0) / max(decode_tokens - 1, 1)
    return Calibration(prefill, decode, short_call_s, device, model, source="measured")


__all__ = ["CALIBRATION_FORMAT", "Calibration", "DEFAULT", "ENV", "calibration_from_json", "fit_calibration",
           "load_calibration", "save_calibration"]
