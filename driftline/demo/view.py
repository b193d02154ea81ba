"""The demo's live terminal view, and the plain tables it prints at the end.

On a terminal the view redraws itself in place about once a second (cursor moves and
line clears only, no full-screen mode, so what was printed before stays above it and the
last frame stays on screen). When stdout is not a terminal (CI, a log file) it prints
line updates instead: a progress line every few seconds and one line per incident,
alert and page as they happen.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from driftline.demo.metrics import PipelineLine
from driftline.demo.receiver import Page
from driftline.demo.timeline import ScriptedIncident
from driftline.demo.watch import AlertState, WorkflowTotals

PLAIN_PROGRESS_EVERY_S: Final = 5.0
RECENT_LINES: Final = 8
ALERT_ROWS: Final = 12


def clock(seconds: float) -> str:
    """``mm:ss``.

    >>> clock(83.4)
    '01:23'
    """
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def progress_bar(fraction: float, width: int = 24) -> str:
    """``[#####-----]``.

    >>> progress_bar(0.5, 10)
    '[#####-----]'
    """
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Rows as aligned text; numbers right-aligned, floats with 4 decimals.

    >>> print("\\n".join(format_table([{"w": "a", "n": 3, "usd": 1.5}], ["w", "n", "usd"])))
    w  n     usd
    -  -  ------
    a  3  1.5000
    """

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        if hasattr(value, "strftime"):
            return str(value.strftime("%H:%M:%S"))
        return str(value)

    text = [[cell(r.get(c)) for c in columns] for r in rows]
    numeric = [
        all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) and bool(rows)
        for c in columns
    ]
    widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line(columns), line(["-" * w for w in widths]), *(line(t) for t in text)]


def incident_outcome(lasts: bool, alerts: Sequence[AlertState]) -> str:
    """What became of an incident's alerts: all resolved once it ended, open while it lasts.

    >>> incident_outcome(False, []), incident_outcome(True, [])
    ('', '')
    """
    if not alerts:
        return ""
    still_open = sum(1 for a in alerts if a.is_open)
    if lasts:
        return (
            "all open (it lasts)"
            if still_open == len(alerts)
            else (f"{still_open} open (it lasts), {len(alerts) - still_open} resolved")
        )
    return "all resolved" if not still_open else f"{still_open} STILL OPEN after it ended"


def paging_outcome(pages: Sequence[Page]) -> str:
    """Triggers per dedup key: one incident pages once.

    >>> paging_outcome([])
    'no pages'
    """
    if not pages:
        return "no pages"
    per_key: dict[str, int] = {}
    for page in pages:
        if page.action == "trigger":
            per_key[page.dedup_key] = per_key.get(page.dedup_key, 0) + 1
    resolves = sum(1 for p in pages if p.action == "resolve")
    twice = sorted(k for k, n in per_key.items() if n > 1)
    head = f"{sum(per_key.values())} triggers for {len(per_key)} dedup keys, {resolves} resolves"
    if not twice:
        return f"{head}; no dedup key triggered twice"
    return f"{head}; TRIGGERED MORE THAN ONCE: {', '.join(twice)}"


@dataclass
class Frame:
    """Everything one refresh of the view shows."""

    phase: str  # starting | traffic | draining | stopping
    elapsed_s: float
    duration_s: float
    spans_sent: int
    spans_per_s: float
    events_sent: int
    events_seen: int
    worker: PipelineLine  # the worker's own /metrics: rates, lag, open traces, store backlog
    workflows: dict[str, WorkflowTotals]
    incidents: list[tuple[ScriptedIncident, str, float | None]]  # incident, state, detected after
    alerts: list[AlertState]
    explained_by: dict[str, str]  # alert_id -> incident kind it is evidence of
    pages: list[Page]
    paging: str
    run_started: float  # wall clock of traffic start
    failed_spans: int = 0


@dataclass
class LiveView:
    out: TextIO
    tty: bool
    width: int = 100
    _lines_drawn: int = 0
    _last_plain: float = 0.0
    _recent: list[str] = field(default_factory=list)
    _pages_reported: int = 0
    _paged_open: set[str] = field(default_factory=set)  # dedup keys triggered, not resolved
    _incident_states: dict[str, str] = field(default_factory=dict)
    now: Callable[[], float] = time.time

    @classmethod
    def for_stream(cls, out: TextIO, tty: bool | None = None) -> LiveView:
        is_tty = out.isatty() if tty is None else tty
        width = shutil.get_terminal_size((100, 40)).columns if is_tty else 120
        return cls(out, is_tty, max(60, width - 1))

    # --- news: one line per thing that happened ----------------------------------

    def news(self, frame: Frame, line: str) -> None:
        stamped = f"[{clock(frame.elapsed_s)}] {line}"
        if self.tty:
            self._recent = [*self._recent, stamped][-RECENT_LINES:]
        else:
            self._print(stamped)

    def note(self, line: str) -> None:
        """A message outside the live frame (start-up, shutdown)."""
        self.clear()
        self._print(line)

    def update(
        self, frame: Frame, opened: Sequence[AlertState], resolved: Sequence[AlertState]
    ) -> None:
        for incident, state, _ in frame.incidents:
            before = self._incident_states.get(incident.title)
            if state != before and state in ("active", "ended"):
                verb = "starts" if state == "active" else "ends"
                self.news(frame, f"INCIDENT {verb}: {incident.title}")
            self._incident_states[incident.title] = state
        for alert in opened:
            why = frame.explained_by.get(alert.alert_id)
            tail = f"  <- {why}" if why else ""
            self.news(
                frame,
                f"ALERT OPEN    {alert.severity:8} {alert.kind:7} {alert.workflow} "
                f"{alert.metric}{tail}",
            )
        for alert in resolved:
            lasted = ((alert.resolved_at_us or 0) - alert.opened_at_us) / 1e6
            self.news(
                frame,
                f"ALERT RESOLVE {alert.kind:7} {alert.workflow} {alert.metric} "
                f"(open {lasted:.0f}s)",
            )
        for page in frame.pages[self._pages_reported :]:
            # A trigger for an incident already paged is PagerDuty's update of it: counted,
            # not announced.
            if page.action == "trigger" and page.dedup_key in self._paged_open:
                continue
            if page.action == "trigger":
                self._paged_open.add(page.dedup_key)
            else:
                self._paged_open.discard(page.dedup_key)
            self.news(frame, f"PAGED {page.action:8} {page.severity:8} {page.dedup_key}")
        self._pages_reported = len(frame.pages)
        if self.tty:
            self._redraw(self._render(frame))
        elif self.now() - self._last_plain >= PLAIN_PROGRESS_EVERY_S:
            self._last_plain = self.now()
            self._print(self._progress_line(frame))

    # --- frame -----------------------------------------------------------------

    def _progress_line(self, f: Frame) -> str:
        open_alerts = sum(1 for a in f.alerts if a.is_open)
        triggers = sum(1 for p in f.pages if p.action == "trigger")
        reading = f.worker.reading
        worker = (
            f"worker in {f.worker.spans_per_s:5.0f}/s lag {reading.lag_records:,.0f}"
            if reading is not None
            else f"worker {f.worker.problem}"
        )
        return (
            f"[{clock(f.elapsed_s)}/{clock(f.duration_s)}] {f.phase:8} "
            f"spans sent {f.spans_per_s:5.0f}/s  {worker}  "
            f"events {f.events_seen:,} of {f.events_sent:,}  alerts {open_alerts} open "
            f"{len(f.alerts) - open_alerts} resolved  pages {triggers} trigger "
            f"{len(f.pages) - triggers} resolve"
        )

    def _render(self, f: Frame) -> list[str]:
        fraction = f.elapsed_s / f.duration_s if f.duration_s else 1.0
        lines = [
            f"driftline demo  {f.phase:8} {clock(f.elapsed_s)} / {clock(f.duration_s)} "
            f"{progress_bar(fraction)} {fraction:4.0%}",
            f"traffic  spans sent {f.spans_per_s:5.0f}/s   events in llm_events "
            f"{f.events_seen:,} of {f.events_sent:,} sent"
            + (f"   FAILED spans {f.failed_spans}" if f.failed_spans else ""),
            f.worker.text(),
            "",
            f"{'workflow':18} {'requests':>9} {'events':>8} {'cost USD':>10}",
        ]
        for name in sorted(f.workflows):
            t = f.workflows[name]
            lines.append(f"{name:18} {t.requests:9,} {t.events:8,} {t.cost_usd:10.4f}")
        lines += ["", "incidents"]
        for incident, state, after in f.incidents:
            when = f"{clock(incident.start_s)}"
            if incident.end_s is not None:
                when += f"-{clock(incident.end_s)}"
            if state == "pending" or (after is None and not incident.expects_alert):
                seen = ""
            elif after is None:
                seen = "not detected yet"
            else:
                seen = f"detected after {after:.0f}s"
            lines.append(f"  {when:11} {state:7} {seen:19} {incident.title}")
        open_alerts = [a for a in f.alerts if a.is_open]
        lines += [
            "",
            f"alerts  {len(open_alerts)} open, {len(f.alerts) - len(open_alerts)} resolved"
            f"   (paging: {f.paging})",
        ]
        for alert in f.alerts[-ALERT_ROWS:]:
            opened = clock(alert.seen_open_s - f.run_started)
            state = "open" if alert.is_open else "resolved"
            why = f.explained_by.get(alert.alert_id, "")
            lines.append(
                f"  {opened} {state:8} {alert.severity:8} {alert.kind:7} {alert.workflow:16} "
                f"{alert.metric:26} {why}"
            )
        triggers = sum(1 for p in f.pages if p.action == "trigger")
        resolves = sum(1 for p in f.pages if p.action == "resolve")
        keys = len({p.dedup_key for p in f.pages if p.action == "trigger"})
        lines += [
            "",
            f"paged  {triggers} triggers for {keys} dedup keys, {resolves} resolves",
            "recent",
        ]
        lines += [f"  {line}" for line in self._recent]
        return [line[: self.width] for line in lines]

    def _redraw(self, lines: list[str]) -> None:
        up = f"\x1b[{self._lines_drawn}F" if self._lines_drawn else ""
        body = "".join(f"{line}\x1b[K\n" for line in lines)
        self.out.write(up + body + "\x1b[J")
        self.out.flush()
        self._lines_drawn = len(lines)

    def clear(self) -> None:
        """Forget the drawn frame so the next output starts below it."""
        self._lines_drawn = 0

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
