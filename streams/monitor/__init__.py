"""The monitoring engine: events and traces in, alert lifecycle transitions out.

Pure and deterministic: no Kafka, no Faust, no wall clock. All time is event time
(``end_ts``, else ``start_ts``) on a clock per workflow (:mod:`.clock`), so the stream
and ``driftline replay`` produce the same alerts from the same events. The stream calls
:meth:`Monitor.process` per batch and checkpoints :meth:`Monitor.snapshot` of
:meth:`Monitor.dirty_workflows`; a restarted worker :meth:`Monitor.restore` s them and
continues without a reset and without repeating an alert.

One module per concern, each returning :class:`.hits.Hit` s that
:meth:`Monitor.process` merges in event-time order into the lifecycle:

- :mod:`.drift`: per (bundle, metric) detectors and canary comparisons;
- :mod:`.budgets`: per-call, per-trace and windowed budgets, burn rates;
- :mod:`.routing`: shadow routing (answering model outside the policy), ghost deployments;
- :mod:`.lifecycle`: open while the condition holds, resolve after ``alerts.hold_down_s``
  of it being clear, updates that never re-page;
- :mod:`.snapshot`: the per-workflow checkpoint, versioned plain data (no pickle).

State per tracked workflow, bounded (defaults: warm-up 500, window 500, at most
``detectors.max_bundles_per_workflow`` = 2 bundles; an armed bundle is kept while it
serves traffic):

- per bundle, 9 metric detectors (<= 8 KB of arrays each, see
  :mod:`detectors.composite`) and a ring of ``window`` int64 timestamps (4 KB); measured
  with all nine metrics frozen: 38 KB serialized, about 90 KB in memory with Python
  object overhead (``bench/bench_detector_speed.py``);
- per budget scope (the workflow, plus each configured tenant and route): per-minute
  rings, ``16 * ceil(window_s / 60)`` bytes for window sums (1 h: ~1 KB) and 360
  minutes (~6 KB) for the burn rate;
- per open alert, one record (~2 KB), one per dedup key.

Bound: ``bundles * 90 KB + scopes * 8 KB + open alerts * 2 KB``: about 190 KB with
the defaults, one scope and a few open alerts; 10k workflows stay under 2 GB.
"""

from driftline.streams.monitor.drift import bundle_context, canary_slot
from driftline.streams.monitor.engine import Monitor
from driftline.streams.monitor.hits import Hit, event_time
from driftline.streams.monitor.routing import model_allowed
from driftline.streams.monitor.snapshot import SnapshotError

__all__ = [
    "Hit",
    "Monitor",
    "SnapshotError",
    "bundle_context",
    "canary_slot",
    "event_time",
    "model_allowed",
]
