"""A reference that keeps growing while the metric is in control, a window behind.

A 500-event warm-up knows a mean to about 0.05 standard deviations (more under
autocorrelation) and a 1% rate to a factor of two; a reference frozen there either
alarms for ever on its own error or must be blunted to cover it. Here later values
join the reference once they are ``lag`` events old, in blocks of ``block``, and only
while the detector is quiet: a detection discards everything still waiting (it may
hold the change), and a block is dropped instead of absorbed while the shift holds.
While a test is only building up evidence (not yet a shift), ripe blocks wait, up to
``wait`` events more (a young reference, under two lags, no more than a quarter of its
length): they join once the tests calm down, or when that much longer has passed
without a detection (what moves that slowly is followed, not alarmed). A young
reference's own error keeps the tests building; held the full ``wait``, a 500-value
reference that sat 0.2 sd below the stream stayed 500 values long for 2,400 more and
alarmed on its own error (input tokens of a stationary stretch,
``bench/bench_replay.py --families blind --seed 500``).
So a change is never learned as normal, and a stable stream's reference ends up
``cap`` events long; past that it slides (older sums fade as new blocks join), so it
follows what moves slower than about ``cap`` events (a daily cycle) and stays put for
what moves faster (a shift, a creep over a few thousand events). Only per-block sums
are kept (one row of ``columns`` numbers per block), whatever the values; with
``history``, also the first column's sum of the latest ``history`` blocks that joined
(for the variance of long means, which the reference's totals cannot show).

With ``held``, the latest ``held`` blocks dropped while a shift held (and those a
detection discarded) are kept aside, and join before the ripe ones once the detector
is quiet again, those whose mean (column 1 over column 0) lies within the ``band`` the
caller gives. A slow cycle's phase that held an alert is then learned as the rest of
the stream is: dropped, it left a reference that knew only the other phases, which the
next cycle alarmed on again (measured on stationary streams with a +-9% cycle of 5,000
values: an alert every cycle). A shift beyond the band never joins; a smaller one's
blocks join only if the metric turns quiet while they are held, which a lasting shift
does not (0.1-0.25 sd held for 40,000 values left the reference where it was).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Self

import numpy as np

from driftline.detectors._kernels import FloatArray
from driftline.detectors.base import STATE_VERSION, Field, check_array, decode

# A reference of fewer than this many lags of observations is young: ripe blocks wait at
# most a quarter of its length while a test builds up (``ReferenceGrowth.waiting``).
# Young, it sat where its warm-up happened to sit; once it has grown through two lags the
# full wait applies, so a small shift after a quiet stretch is weighed as before
# (``bench/bench_detectors.py --change-at 1500``; tests/unit/test_detectors_recovery.py).
YOUNG_LAGS = 2


@cache
def _zeros(rows: int, columns: int) -> FloatArray:
    """A read-only zero array shared by every growth of that width: thousands of idle
    detectors hold one (an empty queue, an empty partial block) and copy nothing."""
    out = np.zeros((rows, columns))
    out.setflags(write=False)
    return out


class ReferenceGrowth:
    """Per-block sums waiting to join a reference, and the reference's own sums.

    >>> g = ReferenceGrowth(columns=2, block=10, lag=20, cap=1000)
    >>> g.start(np.array([20.0, 4.0]))  # warm-up: 20 observations, 4 events
    >>> g.push(np.c_[np.ones(50), np.zeros(50)], quiet=True)
    3
    >>> g.totals.tolist()  # 30 more joined; 20 still wait their lag
    [50.0, 4.0]
    """

    __slots__ = (
        "_filled",
        "_held",
        "_history",
        "_partial",
        "_pending",
        "_totals",
        "block",
        "cap",
        "columns",
        "held",
        "history",
        "lag",
        "wait",
    )

    def __init__(
        self,
        columns: int,
        block: int = 100,
        lag: int = 500,
        cap: int = 8000,
        wait: int = 0,
        history: int = 0,
        held: int = 0,
    ) -> None:
        if not 1 <= columns <= 130:
            raise ValueError(f"columns must be in [1, 130], got {columns}")
        if not 1 <= block <= lag:
            raise ValueError(f"block must be in [1, lag], got block={block} lag={lag}")
        if cap < 1:
            raise ValueError(f"cap must be >= 1 observation, got {cap}")
        if not 0 <= wait <= 64 * lag:
            raise ValueError(f"wait must be in [0, 64 lags], got {wait}")
        if not 0 <= history <= 4096:
            raise ValueError(f"history must be in [0, 4096] blocks, got {history}")
        if not 0 <= held <= 4096:
            raise ValueError(f"held must be in [0, 4096] blocks, got {held}")
        self.columns = columns
        self.block = block
        self.lag = lag
        self.cap = cap
        self.wait = wait
        self.history = history
        self.held = held
        self._held = _zeros(0, columns)  # blocks held aside while a shift held
        self._history = np.zeros(0)  # column 1's sum per joined block, oldest first
        self._totals = np.zeros(columns)  # column 0 counts observations
        self._pending = _zeros(0, columns)  # whole blocks, oldest first
        self._partial = _zeros(1, columns)[0]
        self._filled = 0  # observations in the partial block

    @property
    def totals(self) -> FloatArray:
        """The reference's sums (column 0: its number of observations)."""
        return self._totals

    @property
    def room(self) -> int:
        """Observations still missing from the block being filled."""
        return self.block - self._filled

    @property
    def full(self) -> bool:
        return bool(self._totals[0] >= self.cap)

    @property
    def block_sums(self) -> FloatArray:
        """Column 1's sum over each of the latest ``history`` blocks that joined, oldest first."""
        return self._history

    def start(self, totals: FloatArray, block_sums: FloatArray | None = None) -> None:
        """The warm-up's sums (and its column 1 per block): the reference before growth."""
        self._totals = np.asarray(totals, dtype=np.float64).copy()
        if block_sums is not None and self.history:
            self._history = np.asarray(block_sums, dtype=np.float64)[-self.history :].copy()

    def discard(self) -> None:
        """A detection: nothing waiting may join now (it may hold the change)."""
        self._hold_aside(self._pending)
        self._pending = _zeros(0, self.columns)
        self._partial = _zeros(1, self.columns)[0]
        self._filled = 0

    def push(
        self,
        rows: FloatArray,
        quiet: bool,
        building: bool = False,
        band: tuple[float, float] | None = None,
    ) -> int:
        """Queue ``rows`` (one per observation, column 0 all ones); return blocks absorbed.

        Blocks older than ``lag`` join the reference if ``quiet``; if not, they wait
        while the tests are only ``building`` (joining once older than ``lag`` plus
        :meth:`waiting`) and are dropped otherwise (a shift holds), or held aside
        (``held``). When ``quiet``, the blocks held aside whose mean lies within ``band``
        join first.
        """
        rows = np.asarray(rows, dtype=np.float64)
        need = self.block - self._filled
        head, rest = rows[:need], rows[need:]
        self._partial = self._partial + head.sum(axis=0)
        self._filled += head.shape[0]
        blocks = [self._pending]
        if self._filled == self.block:
            blocks.append(self._partial[None, :])
            self._partial = _zeros(1, self.columns)[0]
            self._filled = 0
            whole = rest.shape[0] // self.block * self.block
            if whole:
                blocks.append(rest[:whole].reshape(-1, self.block, self.columns).sum(axis=1))
            tail = rest[whole:]
            self._partial = tail.sum(axis=0) if tail.shape[0] else _zeros(1, self.columns)[0]
            self._filled = tail.shape[0]
        pending = np.concatenate(blocks)
        keep = self.lag // self.block
        if not quiet and building:
            keep += self.waiting() // self.block
        cut = max(0, pending.shape[0] - keep)
        ripe, self._pending = pending[:cut], pending[cut:]
        if not quiet and not building:
            self._hold_aside(ripe)
            return 0
        if quiet and self._held.shape[0]:
            if band is not None:
                means = self._held[:, 1] / self._held[:, 0]
                within = (band[0] <= means) & (means <= band[1])
                ripe = np.concatenate([self._held[within], ripe])
            self._held = _zeros(0, self.columns)
        if not ripe.shape[0]:
            return 0
        for block in ripe:
            # Past the cap the reference slides: older sums fade so it stays ``cap`` long.
            excess = self._totals[0] + block[0] - self.cap
            if excess > 0:
                self._totals *= 1.0 - excess / self._totals[0]
            self._totals += block
        if self.history:
            joined = np.concatenate([self._history, ripe[:, 1]])
            self._history = joined[-self.history :]
        return int(ripe.shape[0])

    def waiting(self) -> int:
        """How long ripe blocks wait while a test builds up: ``wait``, but no more than a
        quarter of the reference's length while it holds fewer than ``YOUNG_LAGS`` lags of
        observations (a young reference's own error keeps the tests building, and would
        hold its growth for longer than it has lived).

        >>> g = ReferenceGrowth(columns=2, lag=500, wait=2000)
        >>> g.start(np.array([500.0, 0.0]))
        >>> g.waiting()
        125
        >>> g = ReferenceGrowth(columns=2, lag=500, wait=2000)
        >>> g.start(np.array([1000.0, 0.0]))  # two lags
        >>> g.waiting()
        2000
        """
        reference = int(self._totals[0])
        if reference < YOUNG_LAGS * self.lag:
            return min(self.wait, reference // 4)
        return self.wait

    def _hold_aside(self, blocks: FloatArray) -> None:
        if self.held and blocks.shape[0]:
            self._held = np.concatenate([self._held, blocks])[-self.held :]

    def to_state(self) -> dict[str, Any]:
        return {
            "class": "ReferenceGrowth",
            "version": STATE_VERSION,
            "args": {
                "columns": self.columns,
                "block": self.block,
                "lag": self.lag,
                "cap": self.cap,
                "wait": self.wait,
                "history": self.history,
                "held": self.held,
            },
            "totals": self._totals.copy(),
            "pending": self._pending.copy(),
            "partial": self._partial.copy(),
            "filled": self._filled,
            "history": self._history.copy(),
            "held": self._held.copy(),
        }

    @classmethod
    def from_state(cls, state: Any) -> Self:
        name = "ReferenceGrowth"
        if not isinstance(state, dict) or state.get("class") != name:
            raise ValueError(f"not a {name} state")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{name} state version {state.get('version')!r} unsupported")
        args = state.get("args")
        optional = {"wait", "history", "held"}  # snapshots from before they existed lack them
        if not isinstance(args, dict) or set(args) - optional != {"columns", "block", "lag", "cap"}:
            raise ValueError(
                f"{name}.args: expected columns, block, lag, cap (wait, history, held)"
            )
        ints = {k: decode(args, k, Field("int"), f"{name}.args") for k in args}
        try:
            out = cls(**ints)
        except ValueError as exc:
            raise ValueError(f"{name}.args: {exc}") from exc
        spec = Field("array", lo=0.0)
        c = out.columns
        totals = check_array(state.get("totals"), f"{name}.totals", "float64", 1, Field("array"))
        pending = check_array(state.get("pending"), f"{name}.pending", "float64", 2, Field("array"))
        partial = check_array(state.get("partial"), f"{name}.partial", "float64", 1, Field("array"))
        if totals.shape != (c,) or partial.shape != (c,) or pending.shape[1:] != (c,):
            raise ValueError(f"{name}.totals/pending/partial: expected {c} columns")
        most = (out.lag + out.wait) // out.block
        if pending.shape[0] > most or min(totals[0], partial[0]) < spec.lo:
            raise ValueError(f"{name}.pending: more blocks than the lag holds, or negative counts")
        if np.any(pending[:, 0] != out.block):
            raise ValueError(f"{name}.pending: a block holds other than {out.block} observations")
        out._totals, out._pending, out._partial = totals, pending, partial
        if not pending.shape[0]:
            out._pending = _zeros(0, c)
        if not partial.any():
            out._partial = _zeros(1, c)[0]
        out._filled = decode(state, "filled", Field("int", lo=0, hi=out.block - 1), name)
        if state.get("history") is not None:
            sums = check_array(state["history"], f"{name}.history", "float64", 1, Field("array"))
            if sums.shape[0] > out.history:
                raise ValueError(f"{name}.history: more than {out.history} blocks")
            out._history = sums
        if state.get("held") is not None:
            held = check_array(state["held"], f"{name}.held", "float64", 2, Field("array"))
            if held.shape[0] and (
                held.shape[1:] != (c,)
                or held.shape[0] > out.held
                or np.any(held[:, 0] != out.block)
            ):
                raise ValueError(f"{name}.held: at most {out.held} blocks of {c} columns")
            if held.shape[0]:
                out._held = held
        return out
