"""Which worker judges which engine (streams/engine_alerts.judge) on a shared book."""

from __future__ import annotations

from driftline.config import AlertSettings, EngineSettings
from driftline.schemas import engine_metrics as em
from driftline.streams.engine_alerts import judge, owner_partition
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_metrics import EngineMetricRows
from driftline.streams.monitor.engine_conditions import EngineConditions

S = 1_000_000_000
ENGINES = [(f"org/model-{i}", f"vllm-{i}.internal:8000") for i in range(12)]


def book_with_saturation() -> EngineAttribution:
    """Every engine at KV 0.97 every 5 s for 60 s, then 0.5 for 60 s."""
    rows = EngineMetricRows()
    for model, instance in ENGINES:
        for i in range(25):
            rows.time_ns.append(10**18 + i * 5 * S)
            rows.engine.append("vllm")
            rows.model.append(model)
            rows.instance.append(instance)
            rows.metric.append(em.KV_CACHE_USAGE)
            rows.value.append(0.97 if i <= 12 else 0.5)
    book = EngineAttribution(staleness_s=30)
    book.add(rows)
    return book


def watch() -> EngineConditions:
    return EngineConditions(EngineSettings(condition_for_s=20, hold_down_s=20), AlertSettings())


def keys(transitions: list[dict]) -> list[tuple[str, str]]:
    return [(t["dedup_key"], t["transition"]) for t in transitions]


def test_each_engine_is_judged_by_the_owner_of_its_partition_only() -> None:
    book = book_with_saturation()
    alone = judge(watch(), book, {0, 1, 2, 3}, 4)
    assert len(alone) == 2 * len(ENGINES)  # one open and one resolve each
    first = judge(watch(), book, {0, 2}, 4)
    second = judge(watch(), book, {1, 3}, 4)
    assert not {k for k, _ in keys(first)} & {k for k, _ in keys(second)}
    assert sorted(keys(first) + keys(second)) == sorted(keys(alone))
    partitions = {owner_partition(e, 4) for e in ENGINES}
    assert len(partitions) > 1  # the engines really are spread over the workers


def test_a_second_check_judges_only_new_reports() -> None:
    book, conditions = book_with_saturation(), watch()
    assert judge(conditions, book, {0, 1, 2, 3}, 4)
    assert judge(conditions, book, {0, 1, 2, 3}, 4) == []
    assert conditions.late_reports == 0
