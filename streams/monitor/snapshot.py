"""The monitor's per-workflow snapshot: explicit, versioned, parsed and validated.

Bytes: ``SNAPSHOT_MAGIC`` then one JSON document (orjson) ``{"version", "workflow",
"state"}``. The state is plain data: the detectors' own ``to_state()`` dicts, the
lifecycle's open alerts, the budget windows and the workflow's clock. Two values JSON
cannot carry are tagged: a numpy array is ``{"$nd": [dtype, shape, base64 of its bytes]}``
(C order, little-endian, dtypes from ``ARRAY_DTYPES`` only) and a float that is not finite
is ``{"$f": "inf" | "-inf" | "nan"}``. Nothing in it is executed: restoring builds every
object through its constructor or ``from_state`` (which range-check their input), and any
inconsistency raises :class:`SnapshotError`, after which the caller drops the snapshot and
the workflow rebuilds from warm-up.

A snapshot taken with other detector settings (enabled metrics, warm-up, window) is
refused the same way: its baselines answer a different question.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
from typing import Any, Final

import numpy as np
import orjson

from driftline.detectors import BurnRate, MetricDetector, WindowSum
from driftline.detectors.metrics import METRICS_BY_NAME
from driftline.detectors.seasonal import HourProfile
from driftline.schemas.alert import ALERT_FIELD_NAMES
from driftline.streams.monitor.budgets import Scope
from driftline.streams.monitor.clock import WorkflowClock
from driftline.streams.monitor.drift import KV_REPORTS_KEPT, MAX_KV_ENGINES, Bundle
from driftline.streams.monitor.hits import CONDITIONS
from driftline.streams.monitor.lifecycle import OpenAlert
from driftline.streams.monitor.untracked import MAX_SIGHTINGS, Sighting

SNAPSHOT_MAGIC: Final = b"DLMON3\n"
SNAPSHOT_VERSION: Final = 3
ARRAY_DTYPES: Final = frozenset({"float64", "float32", "int64", "int32", "int8", "uint8", "bool"})
MAX_ARRAY_ELEMENTS: Final = 10_000_000


class SnapshotError(ValueError):
    """A snapshot cannot be restored; drop it and the baseline rebuilds from warm-up."""


# --- bytes <-> plain data -------------------------------------------------------------


def encode(value: Any) -> Any:
    """Plain data with arrays and non-finite floats tagged, ready for JSON.

    >>> encode({"a": np.arange(2, dtype=np.int8), "b": (1.5, float("inf"))})
    {'a': {'$nd': ['int8', [2], 'AAE=']}, 'b': [1.5, {'$f': 'inf'}]}
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$"):
                raise SnapshotError(f"cannot encode key {key!r}: keys are str, not '$...'")
            out[key] = encode(item)
        return out
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, np.ndarray):
        dtype = value.dtype.name
        if dtype not in ARRAY_DTYPES:
            raise SnapshotError(f"cannot encode an array of dtype {dtype}")
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        return {"$nd": [dtype, list(value.shape), base64.b64encode(data).decode("ascii")]}
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isfinite(number):
            return number
        return {"$f": "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")}
    if value is None or isinstance(value, str):
        return value
    raise SnapshotError(f"cannot encode a {type(value).__name__}")


def decode(value: Any, where: str = "state") -> Any:
    """The inverse of :func:`encode`, checking every tagged value.

    >>> decode({"a": {"$nd": ["int8", [2], "AAE="]}, "b": [{"$f": "-inf"}]})
    {'a': array([0, 1], dtype=int8), 'b': [-inf]}
    """
    if isinstance(value, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "$nd" in value:
        return _array(value, where)
    if "$f" in value:
        if len(value) != 1 or value["$f"] not in ("inf", "-inf", "nan"):
            raise SnapshotError(f"{where}: bad non-finite float {value!r}")
        return float(value["$f"])
    return {k: decode(v, f"{where}.{k}") for k, v in value.items()}


def _array(value: dict[str, Any], where: str) -> np.ndarray:
    spec = value["$nd"]
    if len(value) != 1 or not isinstance(spec, list) or len(spec) != 3:
        raise SnapshotError(f"{where}: an array is [dtype, shape, base64]")
    dtype, shape, data = spec
    if dtype not in ARRAY_DTYPES:
        raise SnapshotError(f"{where}: array dtype {dtype!r} is not one of {sorted(ARRAY_DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise SnapshotError(f"{where}: array shape must be a list of sizes, got {shape!r}")
    size = math.prod(shape)
    if size > MAX_ARRAY_ELEMENTS or not isinstance(data, str):
        raise SnapshotError(f"{where}: array too large or without data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnapshotError(f"{where}: array data is not base64 ({exc})") from None
    kind = np.dtype(dtype).newbyteorder("<")
    if len(raw) != size * kind.itemsize:
        raise SnapshotError(f"{where}: {len(raw)} bytes for {size} values of {dtype}")
    return np.frombuffer(raw, dtype=kind).astype(np.dtype(dtype)).reshape(shape)


def dumps(workflow: str, state: dict[str, Any]) -> bytes:
    doc = {"version": SNAPSHOT_VERSION, "workflow": workflow, "state": encode(state)}
    return SNAPSHOT_MAGIC + orjson.dumps(doc)


def loads(workflow: str, blob: bytes) -> dict[str, Any]:
    """The plain state of ``workflow`` in ``blob``; :class:`SnapshotError` if it is not one."""
    if not isinstance(blob, bytes | bytearray) or not blob.startswith(SNAPSHOT_MAGIC):
        raise SnapshotError(
            f"snapshot for workflow {workflow!r} is not a monitor snapshot of version "
            f"{SNAPSHOT_VERSION}; delete it and the baseline is rebuilt from warm-up"
        )
    try:
        doc = orjson.loads(blob[len(SNAPSHOT_MAGIC) :])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"snapshot for workflow {workflow!r} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot for workflow {workflow!r}: unsupported version")
    if not isinstance(doc.get("workflow"), str):
        raise SnapshotError(f"snapshot for workflow {workflow!r}: no workflow name")
    state = decode(doc.get("state"))
    if not isinstance(state, dict):
        raise SnapshotError(f"snapshot for workflow {workflow!r}: state must be an object")
    return state


# --- objects <-> plain data -----------------------------------------------------------


def bundle_state(bundle: Bundle) -> dict[str, Any]:
    state = {
        "detectors": {name: d.to_state() for name, d in sorted(bundle.detectors.items())},
        "ts_ring": bundle.ts_ring,
        "first_ts": bundle.first_ts,
        "last_ts": bundle.last_ts,
        "n_events": bundle.n_events,
        "canary_pending": bundle.canary_pending,
        "frozen_at": dict(bundle.frozen_at),
        "slot": list(bundle.slot),
        "context": dict(bundle.context),
    }
    if bundle.kv_reports:  # only with KV joined from engine reports: else as before
        state["kv_reports"] = {e: list(t) for e, t in sorted(bundle.kv_reports.items())}
    if bundle.seasons:  # absent from snapshots taken before: profiles start over
        state["seasons"] = {m: p.to_state() for m, p in sorted(bundle.seasons.items())}
    return state


def bundle_from_state(
    state: Any, where: str, metrics: dict[str, tuple[int, int]], window: int
) -> Bundle:
    """``metrics``: name -> (warm-up, window) the settings give each detector.

    A detector saved while its metric's spread was tested stops testing it here when the
    metric no longer does (:attr:`detectors.metrics.Metric.spread`), so a restart (not only
    a new bundle) applies the change. The reverse (a metric that tests spread again) reaches
    only new bundles: a restored detector, re-baselined or not, keeps its own choice.
    """
    doc = _dict(state, where)
    detectors_doc = _dict(doc.get("detectors"), f"{where}.detectors")
    if set(detectors_doc) != set(metrics):
        raise SnapshotError(
            f"{where}: detectors of metrics {sorted(detectors_doc)}, the settings enable "
            f"{sorted(metrics)}"
        )
    detectors = {}
    for name, det_state in detectors_doc.items():
        try:
            detector = MetricDetector.from_state(det_state)
        except ValueError as exc:
            raise SnapshotError(f"{where}.detectors.{name}: {exc}") from None
        if (detector.warmup, detector.window) != metrics[name]:
            raise SnapshotError(f"{where}.detectors.{name}: taken with other warm-up or window")
        metric = METRICS_BY_NAME.get(name)
        if metric is not None and not metric.spread:
            detector.stop_testing_spread()
        detectors[name] = detector
    ring = doc.get("ts_ring")
    if not isinstance(ring, np.ndarray) or ring.dtype != np.int64 or ring.shape != (window,):
        raise SnapshotError(f"{where}.ts_ring: expected {window} int64 times")
    slot = doc.get("slot")
    if not isinstance(slot, list) or len(slot) != 2 or not all(isinstance(s, str) for s in slot):
        raise SnapshotError(f"{where}.slot: expected [operation, model]")
    return Bundle(
        detectors=detectors,
        ts_ring=ring.copy(),
        first_ts=_int(doc, "first_ts", where),
        last_ts=_int(doc, "last_ts", where),
        n_events=_int(doc, "n_events", where),
        canary_pending=_int(doc, "canary_pending", where),
        frozen_at={k: _int(doc["frozen_at"], k, where) for k in _dict(doc.get("frozen_at"), where)},
        slot=(slot[0], slot[1]),
        context=_str_dict(doc.get("context"), f"{where}.context"),
        kv_reports=_kv_reports(doc.get("kv_reports"), f"{where}.kv_reports"),
        seasons=_seasons(doc.get("seasons"), f"{where}.seasons", metrics),
    )


def _seasons(value: Any, where: str, metrics: dict[str, tuple[int, int]]) -> dict[str, HourProfile]:
    """The bundle's profiles by hour of day; none in a snapshot taken before them."""
    if value is None:
        return {}
    out = {}
    for name, state in _dict(value, where).items():
        if name not in metrics:
            raise SnapshotError(f"{where}.{name}: not an enabled metric")
        try:
            out[name] = HourProfile.from_state(state)
        except ValueError as exc:
            raise SnapshotError(f"{where}.{name}: {exc}") from None
    return out


def _kv_reports(value: Any, where: str) -> dict[str, list[int]]:
    """The KV reports a bundle took last, per engine; none in a snapshot taken before they
    were kept (the calls of its last reports then count once more)."""
    if value is None:
        return {}
    doc = _dict(value, where)
    if len(doc) > MAX_KV_ENGINES:
        raise SnapshotError(f"{where}: {len(doc)} engines, at most {MAX_KV_ENGINES}")
    out = {}
    for engine, times in doc.items():
        if (
            not isinstance(times, list)
            or not 0 < len(times) <= KV_REPORTS_KEPT
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in times)
            or any(a >= b for a, b in itertools.pairwise(times))
        ):
            raise SnapshotError(
                f"{where}.{engine}: expected 1 to {KV_REPORTS_KEPT} ascending report times"
            )
        out[engine] = list(times)
    return out


def scope_state(scope: Scope) -> dict[str, Any]:
    return {
        "tokens": None if scope.tokens is None else scope.tokens.to_state(),
        "cost": None if scope.cost is None else scope.cost.to_state(),
        "burn": None if scope.burn is None else scope.burn.to_state(),
    }


def scope_from_state(state: Any, where: str) -> Scope:
    doc = _dict(state, where)
    try:
        tokens = None if doc.get("tokens") is None else WindowSum.from_state(doc["tokens"])
        cost = None if doc.get("cost") is None else WindowSum.from_state(doc["cost"])
        burn = None if doc.get("burn") is None else BurnRate.from_state(doc["burn"])
    except ValueError as exc:
        raise SnapshotError(f"{where}: {exc}") from None
    return Scope(tokens, cost, burn)


def alert_state(alert: OpenAlert) -> dict[str, Any]:
    return {
        "record": alert.record,
        "condition": alert.condition,
        "last_hit_ts": alert.last_hit_ts,
        "emitted_score": alert.emitted_score,
        "emitted_severity": alert.emitted_severity,
        "clear_since": alert.clear_since,
    }


def alert_from_state(state: Any, key: str, workflow: str, where: str) -> OpenAlert:
    doc = _dict(state, where)
    record = _dict(doc.get("record"), f"{where}.record")
    missing = sorted(set(ALERT_FIELD_NAMES) - set(record))
    if missing:
        raise SnapshotError(f"{where}.record: missing {missing}")
    if record.get("dedup_key") != key or record.get("state") != "open":
        raise SnapshotError(f"{where}.record: not the open alert {key!r}")
    if record.get("workflow") != workflow:
        raise SnapshotError(f"{where}.record: an alert of workflow {record.get('workflow')!r}")
    condition = doc.get("condition")
    if condition not in CONDITIONS:
        raise SnapshotError(f"{where}.condition: {condition!r} is not one of {CONDITIONS}")
    score = doc.get("emitted_score")
    if not isinstance(score, float | int) or isinstance(score, bool):
        raise SnapshotError(f"{where}.emitted_score: expected a number")
    severity = doc.get("emitted_severity")
    if not isinstance(severity, str):
        raise SnapshotError(f"{where}.emitted_severity: expected a string")
    clear_since = doc.get("clear_since")
    return OpenAlert(
        record=record,
        condition=condition,
        last_hit_ts=_int(doc, "last_hit_ts", where),
        emitted_score=float(score),
        emitted_severity=severity,
        clear_since=None if clear_since is None else _int(doc, "clear_since", where),
    )


def sighting_state(seen: Sighting) -> list[int]:
    return [seen.first_ts, seen.last_ts, seen.n_events]


def left_out_from_state(value: Any, where: str) -> dict[str, Sighting]:
    """The bundles left out of monitoring; none in a snapshot taken before they were kept
    (the ``tracked_bundles`` warning then resolves unless they are seen again)."""
    if value is None:
        return {}
    doc = _dict(value, where)
    if len(doc) > MAX_SIGHTINGS:
        raise SnapshotError(f"{where}: {len(doc)} bundles, at most {MAX_SIGHTINGS}")
    out = {}
    for bundle_id, seen in doc.items():
        if (
            not isinstance(seen, list)
            or len(seen) != 3
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in seen)
            or seen[0] > seen[1]
            or seen[2] < 1
        ):
            raise SnapshotError(f"{where}.{bundle_id}: expected [first_ts, last_ts, calls]")
        out[bundle_id] = Sighting(*seen)
    return out


def clock_from_state(state: Any, where: str) -> WorkflowClock:
    doc = _dict(state, where)
    ahead = doc.get("ahead")
    return WorkflowClock(
        now=_int(doc, "now", where), ahead=None if ahead is None else _int(doc, "ahead", where)
    )


def times_from_state(state: Any, where: str) -> dict[str, int]:
    doc = _dict(state, where)
    return {key: _int(doc, key, where) for key in doc}


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _int(doc: dict[str, Any], name: str, where: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SnapshotError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
    return value


def _str_dict(value: Any, where: str) -> dict[str, str]:
    doc = _dict(value, where)
    if not all(isinstance(v, str) for v in doc.values()):
        raise SnapshotError(f"{where}: expected strings")
    return dict(doc)
