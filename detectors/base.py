"""What every detector shares: the detection flag, its evidence, warm-up and plain state.

river's ``_BaseDriftDetector`` contract: ``update(x)`` then ``drift_detected`` is true
for exactly the observation that caused a detection; the batch form
``update_many(values) -> indices`` is the one each detector implements (vectorized),
``update(x)`` is a batch of one.

State is plain data so a worker can checkpoint it without pickle: ``to_state()``
returns a dict of str, int, float, bool, None, lists, str-keyed dicts and numpy
arrays; ``from_state(state)`` rebuilds the detector through its constructor (which
range-checks the arguments) and validates every field it restores (type, dtype,
shape, range, finite), raising ``ValueError`` that names the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from driftline.detectors.reference import FrozenReference, fill_warmup

STATE_VERSION = 1
_PLAIN_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Field:
    """How one attribute is checked when restored.

    ``kind``: ``float``, ``int``, ``bool``, ``str``, ``array`` (``dtype``, ``ndim``),
    ``floats`` (a list of floats kept as a float64 array), ``numbers`` (a tuple of
    finite floats, kept as a list), ``strs``, ``plain`` (evidence: any plain data),
    ``reference`` (a :class:`FrozenReference` or None), ``detector`` (a nested object of
    class ``cls`` with ``to_state``/``from_state``, or None) or ``detectors`` (a tuple
    of them, or None).
    """

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    dtype: str = "float64"
    ndim: int = 1
    allow_inf: bool = False
    optional: bool = False
    cls: type[Any] | None = None


class DriftDetector:
    """Base of the drift detectors: flag, evidence, warm-up preamble and state."""

    __slots__ = ("_drift_detected", "_evidence", "_last", "_warm")
    # Constructor arguments, stored under their own names.
    _ARGS: ClassVar[tuple[str, ...]] = ()
    # Changing state restored by from_state (besides the flag, the evidence, the warm-up).
    _STATE: ClassVar[dict[str, Field]] = {}
    _WARM_KIND: ClassVar[str] = "floats"

    def __init__(self) -> None:
        self._drift_detected = False
        self._last: dict[str, Any] = {}
        # The evidence of each detection of the latest batch, in order (not state; a
        # tuple: thousands of detectors hold an empty one, the same object).
        self._evidence: tuple[dict[str, Any], ...] = ()
        self._warm: list[Any] = []

    @property
    def drift_detected(self) -> bool:
        """True only right after the observation that caused a detection."""
        return self._drift_detected

    @property
    def last_detection(self) -> dict[str, Any]:
        """Evidence of the latest detection (empty before the first)."""
        return self._last

    @property
    def batch_evidence(self) -> tuple[dict[str, Any], ...]:
        """The evidence of each detection :meth:`update_many` just returned, in order
        (:attr:`last_detection` is only the batch's latest)."""
        return self._evidence

    def update(self, x: Any) -> None:
        self.update_many([x])

    def update_many(self, values: Any) -> list[int]:
        """Feed a batch; return the indices (into ``values``) of detections."""
        raise NotImplementedError

    def _warm_up(self, values: Sequence[Any], warmup: int) -> int | None:
        """Buffer leading values until ``warmup`` are held; the index to scan from, or None.

        The caller freezes its reference when this first returns an index.
        """
        self._drift_detected = False
        self._evidence = ()
        start = fill_warmup(self._warm, warmup, values)
        return start if len(self._warm) >= warmup else None

    def _flag(self, found: list[int], n: int) -> list[int]:
        # The flag describes the batch's last observation, as a one-by-one update would.
        self._drift_detected = bool(found) and found[-1] == n - 1
        self._evidence = self._evidence[len(self._evidence) - len(found) :] if found else ()
        return found

    def _note(self, evidence: dict[str, Any]) -> None:
        """Record a detection's evidence (each detector's one way to set it)."""
        self._last = evidence
        self._evidence = (*self._evidence, evidence)

    # --- plain state ----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this detector is (plain data)."""
        out: dict[str, Any] = {"class": type(self).__name__, "version": STATE_VERSION}
        out["args"] = {name: _plain_arg(getattr(self, name)) for name in self._ARGS}
        warm: Any = list(self._warm)
        if self._WARM_KIND == "floats":
            warm = np.asarray(self._warm, dtype=np.float64)
        out["warm"] = warm
        out["drift_detected"] = self._drift_detected
        out["last"] = dict(self._last)
        out.update(encode_fields(self, self._STATE))
        return out

    @classmethod
    def from_state(cls, state: Any) -> Self:
        """Rebuild a detector from :meth:`to_state`; ``ValueError`` names a bad field."""
        if not isinstance(state, dict):
            raise ValueError(f"{cls.__name__} state must be a dict, got {type(state).__name__}")
        if state.get("class") != cls.__name__:
            raise ValueError(f"state is for {state.get('class')!r}, not {cls.__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{cls.__name__} state version {state.get('version')!r} unsupported")
        args = state.get("args")
        if not isinstance(args, dict) or set(args) != set(cls._ARGS):
            raise ValueError(f"{cls.__name__} state: args must name exactly {cls._ARGS}")
        for name, value in args.items():
            check_plain(value, f"{cls.__name__}.args.{name}")
        try:
            det = cls._construct({k: _restore_arg(v) for k, v in args.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.__name__} state: invalid args: {exc}") from exc
        det._warm = decode(state, "warm", Field(cls._WARM_KIND), cls.__name__)
        det._drift_detected = decode(state, "drift_detected", Field("bool"), cls.__name__)
        det._last = decode(state, "last", Field("plain"), cls.__name__)
        decode_fields(det, state, cls._STATE, cls.__name__)
        det._check_state()
        return det

    @classmethod
    def _construct(cls, args: dict[str, Any]) -> Self:
        return cls(**args)

    def _check_state(self) -> None:
        """Cross-field checks after a restore (shapes that must agree); ValueError."""


def encode_fields(obj: Any, fields: dict[str, Field]) -> dict[str, Any]:
    """``obj``'s attributes named in ``fields`` as plain data."""
    return {name: _encode(getattr(obj, name), spec) for name, spec in fields.items()}


def decode_fields(obj: Any, state: dict[str, Any], fields: dict[str, Field], owner: str) -> None:
    """Set ``obj``'s attributes from ``state``, each checked against its field."""
    for name, spec in fields.items():
        object.__setattr__(obj, name, decode(state, name, spec, owner))


def _plain_arg(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _restore_arg(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _encode(value: Any, spec: Field) -> Any:
    if value is None:
        return None
    if spec.kind == "reference":
        return reference_to_state(value)
    if spec.kind == "detector":
        return value.to_state()
    if spec.kind == "detectors":
        return [v.to_state() for v in value]
    if spec.kind == "numbers":
        return [float(v) for v in value]
    if spec.kind == "floats":
        return np.asarray(value, dtype=np.float64)
    if spec.kind == "array":
        return np.array(value, copy=True)
    if spec.kind in ("plain", "strs"):
        return _copy_plain(value)
    if spec.kind == "float":
        return float(value)
    if spec.kind == "int":
        return int(value)
    return value


def _copy_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(v) for v in value]
    return value


def check_plain(value: Any, where: str) -> None:
    """Plain data only: str, int, float, bool, None, lists and str-keyed dicts."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: dict keys must be str, got {k!r}")
            check_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_SCALARS):
        raise ValueError(f"{where}: not plain data ({type(value).__name__})")
    elif isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{where}: NaN")


def decode(state: dict[str, Any], name: str, spec: Field, owner: str) -> Any:
    """Field ``name`` of ``state``, checked against ``spec``; ValueError names it."""
    where = f"{owner}.{name}"
    if name not in state:
        raise ValueError(f"{where}: missing")
    value = state[name]
    if value is None and (spec.optional or spec.kind in ("reference", "detector", "detectors")):
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{where}: expected bool, got {type(value).__name__}")
        return bool(value)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{where}: expected int, got {type(value).__name__}")
        return int(_in_range(int(value), spec, where))
    if spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
        x = float(value)
        if math.isnan(x) or (math.isinf(x) and not spec.allow_inf):
            raise ValueError(f"{where}: not a finite number ({x})")
        return _in_range(x, spec, where)
    if spec.kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected str, got {type(value).__name__}")
        return value
    if spec.kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of str")
        return list(value)
    if spec.kind == "plain":
        check_plain(value, where)
        return _copy_plain(value)
    if spec.kind in ("array", "floats"):
        dtype = "float64" if spec.kind == "floats" else spec.dtype
        ndim = 1 if spec.kind == "floats" else spec.ndim
        arr = check_array(value, where, dtype, ndim, spec)
        return arr.tolist() if spec.kind == "floats" else arr
    if spec.kind == "reference":
        return reference_from_state(value, where)
    if spec.kind == "detector":
        assert spec.cls is not None
        return spec.cls.from_state(value)
    if spec.kind == "detectors":
        assert spec.cls is not None
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list of states")
        return tuple(spec.cls.from_state(v) for v in value)
    if spec.kind == "numbers":
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list of numbers")
        if spec.ndim and len(value) != spec.ndim:
            raise ValueError(f"{where}: expected {spec.ndim} numbers, got {len(value)}")
        one = Field("float", lo=spec.lo, hi=spec.hi)
        return tuple(decode({"v": v}, "v", one, where) for v in value)
    raise AssertionError(f"unknown field kind {spec.kind}")


def _in_range(x: float, spec: Field, where: str) -> float:
    if not spec.lo <= x <= spec.hi:
        raise ValueError(f"{where}: {x} outside [{spec.lo}, {spec.hi}]")
    return x


def check_array(value: Any, where: str, dtype: str, ndim: int, spec: Field) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise ValueError(f"{where}: expected dtype {dtype}, got {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{where}: expected {ndim} dimension(s), got shape {value.shape}")
    if value.dtype.kind == "f":
        bad = np.isnan(value) | (np.isinf(value) if not spec.allow_inf else False)
        if np.any(bad):
            raise ValueError(f"{where}: holds non-finite values")
    if value.size and (np.min(value) < spec.lo or np.max(value) > spec.hi):
        raise ValueError(f"{where}: values outside [{spec.lo}, {spec.hi}]")
    return value.copy()


_REFERENCE_FIELDS = {
    "model": Field("str"),
    "n": Field("int", lo=1),
    "mean": Field("float"),
    "scale": Field("float", lo=1e-12),
    "inflation": Field("float", lo=1.0),
    "z_sample": Field("array", dtype="float32"),
}


def reference_to_state(ref: FrozenReference) -> dict[str, Any]:
    return {
        "model": ref.model,
        "n": ref.n,
        "mean": ref.mean,
        "scale": ref.scale,
        "inflation": ref.inflation,
        "z_sample": ref.z_sample.copy(),
    }


def reference_from_state(value: Any, where: str) -> FrozenReference:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a dict, got {type(value).__name__}")
    fields = {k: decode(value, k, spec, where) for k, spec in _REFERENCE_FIELDS.items()}
    if fields["model"] not in ("continuous", "poisson", "bernoulli"):
        raise ValueError(f"{where}.model: unknown model {fields['model']!r}")
    return FrozenReference(**fields)
