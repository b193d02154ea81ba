"""The engine scraper (collectors/scrape.py): a /metrics body to the OTLP message the worker's
decoder reads, and a target that fails, hangs or floods without stopping the others."""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from pydantic import ValidationError

from driftline.collectors.scrape import (
    FAILED_CONNECT,
    FAILED_PARSE,
    FAILED_PUBLISH,
    FAILED_STATUS,
    FAILED_TIMEOUT,
    FAILED_TOO_LARGE,
    OK,
    EngineScraper,
    ScrapeError,
    fetch,
    scrape_message,
    target_of,
)
from driftline.config import Settings
from driftline.schemas import engine_metrics as em
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SCRAPE_NS = 1_764_806_400_000_000_000  # 2025-12-04 00:00 UTC
# The shape of a vLLM server's /metrics (prometheus-client's exposition): two data-parallel
# engines, the name of the KV gauge before the V1 engine, counters with their _created
# series, a histogram, and process metrics driftline does not read.
VLLM_BODY = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 12850.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 3.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 7.0
vllm:num_requests_waiting{{engine="1",model_name="{MODEL}"}} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.42
vllm:gpu_cache_usage_perc{{engine="1",model_name="{MODEL}"}} 0.875
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="{MODEL}"}} 4.0
vllm:num_preemptions_total{{engine="1",model_name="{MODEL}"}} 0.0
# HELP vllm:num_preemptions_created Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_created gauge
vllm:num_preemptions_created{{engine="0",model_name="{MODEL}"}} 1.7648e+09
vllm:num_preemptions_created{{engine="1",model_name="{MODEL}"}} 1.7648e+09
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="{MODEL}"}} 51200.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="0.3",model_name="{MODEL}"}} 1.0
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="1.0",model_name="{MODEL}"}} 6.0
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 9.0
vllm:e2e_request_latency_seconds_count{{engine="0",model_name="{MODEL}"}} 9.0
vllm:e2e_request_latency_seconds_sum{{engine="0",model_name="{MODEL}"}} 8.25
"""
INSTANCE = "vllm-0.batch.internal:8000"
TARGET = target_of(f"http://{INSTANCE}/metrics")


def decoded(body: str) -> EngineMetricRows:
    result = scrape_message(body, TARGET, SCRAPE_NS)
    assert result.message is not None
    return decode_metrics_message(result.message, arrival_ns=SCRAPE_NS)


def rows_of(body: str) -> set[tuple[str, str, str, str, float, int]]:
    rows = decoded(body)
    assert not rows.rejects
    return set(
        zip(
            rows.metric,
            rows.instance,
            rows.model,
            rows.source_metric,
            rows.value,
            rows.time_ns,
            strict=True,
        )
    )


def engine_zero(body: str) -> str:
    return "\n".join(line for line in body.splitlines() if 'engine="1"' not in line) + "\n"


def test_a_vllm_body_decodes_to_what_the_worker_stores() -> None:
    assert rows_of(engine_zero(VLLM_BODY)) == {
        (em.REQUESTS_RUNNING, INSTANCE, MODEL, "vllm:num_requests_running", 3.0, SCRAPE_NS),
        (em.REQUESTS_WAITING, INSTANCE, MODEL, "vllm:num_requests_waiting", 7.0, SCRAPE_NS),
        # The deprecated name is read as the KV usage, its source kept.
        (em.KV_CACHE_USAGE, INSTANCE, MODEL, "vllm:gpu_cache_usage_perc", 0.42, SCRAPE_NS),
        (em.PREEMPTIONS, INSTANCE, MODEL, "vllm:num_preemptions_total", 4.0, SCRAPE_NS),
    }


def test_data_parallel_engines_other_than_the_first_are_stored() -> None:
    rows = decoded(VLLM_BODY)
    assert not rows.rejects
    assert f"{INSTANCE}/1" in rows.instance


def test_only_known_metrics_are_encoded_with_the_receivers_resource() -> None:
    result = scrape_message(VLLM_BODY, TARGET, SCRAPE_NS)
    assert result.message is not None
    request = ExportMetricsServiceRequest.FromString(result.message)
    (resource_metrics,) = request.resource_metrics
    resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    assert resource == {
        "service.name": "llm-engines",
        "service.instance.id": INSTANCE,
        "server.address": "vllm-0.batch.internal",
        "server.port": "8000",
    }
    metrics = {m.name: m for m in resource_metrics.scope_metrics[0].metrics}
    assert set(metrics) == {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:num_preemptions_total",
    }
    # gc, prompt tokens, the histogram and the _created gauge are dropped by name.
    assert (result.metrics_kept, result.metrics_dropped, result.points) == (4, 4, 8)
    preemptions = metrics["vllm:num_preemptions_total"].sum
    assert preemptions.is_monotonic and preemptions.aggregation_temporality == 2  # cumulative
    # The _created series is the counter's start.
    assert {p.start_time_unix_nano for p in preemptions.data_points} == {1_764_800_000 * 10**9}
    labels = {a.key: a.value.string_value for a in preemptions.data_points[0].attributes}
    assert labels == {"engine": "0", "model_name": MODEL}


def test_a_known_histogram_keeps_its_buckets_and_token_type() -> None:
    # The GenAI token-usage histogram with its dotted name, as a UTF-8 exposition writes it.
    body = """\
# TYPE "gen_ai.client.token.usage" histogram
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="input",le="100"} 2
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="input",le="1000"} 5
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="input",le="+Inf"} 6
{"gen_ai.client.token.usage_count","gen_ai.token.type"="input"} 6
{"gen_ai.client.token.usage_sum","gen_ai.token.type"="input"} 4321
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="output",le="100"} 6
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="output",le="1000"} 6
{"gen_ai.client.token.usage_bucket","gen_ai.token.type"="output",le="+Inf"} 6
{"gen_ai.client.token.usage_count","gen_ai.token.type"="output"} 6
{"gen_ai.client.token.usage_sum","gen_ai.token.type"="output"} 300
"""
    result = scrape_message(body, TARGET, SCRAPE_NS)
    assert result.message is not None
    request = ExportMetricsServiceRequest.FromString(result.message)
    histogram = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram
    by_type = {p.attributes[0].value.string_value: p for p in histogram.data_points}
    assert list(by_type["input"].explicit_bounds) == [100.0, 1000.0]
    assert list(by_type["input"].bucket_counts) == [2, 3, 1]  # per bucket, not cumulative
    assert list(by_type["output"].bucket_counts) == [6, 0, 0]
    usage = em.CLIENT_TOKEN_USAGE
    assert {(m, v) for m, _, _, _, v, _ in rows_of(body)} == {
        (f"{usage}.input:count", 6.0),
        (f"{usage}.input:sum", 4321.0),
        (f"{usage}.output:count", 6.0),
        (f"{usage}.output:sum", 300.0),
    }


def test_a_histogram_count_with_no_otlp_encoding_drops_only_its_series() -> None:
    body = """\
# TYPE "gen_ai.server.request.duration" histogram
{"gen_ai.server.request.duration_bucket",model="a",le="+Inf"} NaN
{"gen_ai.server.request.duration_count",model="a"} NaN
{"gen_ai.server.request.duration_sum",model="a"} 1
{"gen_ai.server.request.duration_bucket",model="b",le="+Inf"} 2
{"gen_ai.server.request.duration_count",model="b"} 2
{"gen_ai.server.request.duration_sum",model="b"} 0.5
"""
    assert {(m, model, v) for m, _, model, _, v, _ in rows_of(body)} == {
        (f"{em.SERVER_REQUEST_DURATION}:count", "b", 2.0),
        (f"{em.SERVER_REQUEST_DURATION}:sum", "b", 0.5),
    }


def test_a_body_timestamp_and_clashing_labels_are_kept_as_prometheus_keeps_them() -> None:
    body = (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m",instance="x",job="y"} 0.5 1764806399000\n'
        # Untyped (no TYPE line): a gauge, as the receiver reads it.
        'vllm:num_requests_waiting{model_name="m"} 2\n'
    )
    result = scrape_message(body, TARGET, SCRAPE_NS)
    assert result.message is not None
    metrics = ExportMetricsServiceRequest.FromString(result.message).resource_metrics[0]
    kv, waiting = metrics.scope_metrics[0].metrics
    point = kv.gauge.data_points[0]
    assert point.time_unix_nano == SCRAPE_NS - 10**9
    labels = {a.key: a.value.string_value for a in point.attributes}
    assert labels == {"model_name": "m", "exported_instance": "x", "exported_job": "y"}
    assert waiting.gauge.data_points[0].as_double == 2.0
    # The instance is still the target's, not the body's label.
    assert {instance for _, instance, *_ in rows_of(body)} == {INSTANCE}


def test_a_body_without_known_metrics_gives_no_message() -> None:
    result = scrape_message("# TYPE up gauge\nup 1\n", TARGET, SCRAPE_NS)
    assert (result.message, result.metrics_dropped) == (None, 1)


@pytest.mark.parametrize(
    "body", ["<html><body>Not Found</body></html>\n", "vllm:kv_cache_usage_perc{model_name=\n"]
)
def test_a_body_that_is_not_the_text_format_is_a_parse_failure(body: str) -> None:
    with pytest.raises(ScrapeError) as failure:
        scrape_message(body, TARGET, SCRAPE_NS)
    assert failure.value.kind == FAILED_PARSE


def test_targets_take_the_port_of_their_scheme() -> None:
    assert target_of("https://vllm.internal/metrics").instance == "vllm.internal:443"
    assert target_of("http://10.0.0.7/metrics").instance == "10.0.0.7:80"
    with pytest.raises(ValueError, match="not an http"):
        target_of("vllm.internal:8000/metrics")


# --- failures, against a real HTTP server ---------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = VLLM_BODY.encode()
    delay_s: float = 0.0
    chunked: bool = False  # no Content-Length: the size is only known by reading


@dataclass
class MetricsServer:
    answers: dict[str, Answer]
    port: int = 0
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    state = MetricsServer({})

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            answer = state.answers.get(self.path, Answer(status=404, body=b"no such path\n"))
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            time.sleep(answer.delay_s)
            # The scraper hangs up on a slow or too large answer: expected, not worth a trace.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer(answer)

        def _answer(self, answer: Answer) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(answer.body), 4096):
                    piece = answer.body[start : start + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"


def failure_of(call: Callable[[], object]) -> str:
    with pytest.raises(ScrapeError) as failure:
        call()
    return failure.value.kind


def test_fetch_failures_have_their_kind(metrics_server: MetricsServer) -> None:
    big = b"# " + b"x" * 5000 + b"\n"
    metrics_server.answers.update(
        {
            "/error": Answer(status=500, body=b"internal error\n"),
            "/big": Answer(body=big),
            "/big-chunked": Answer(body=big, chunked=True),
            "/slow": Answer(delay_s=2.0),
            "/fine": Answer(),
        }
    )
    url = metrics_server.url
    with httpx.Client() as client:

        def get(target: str) -> Callable[[], str]:
            return lambda: fetch(client, target, 0.5, 4096)

        assert failure_of(get(url("/error"))) == FAILED_STATUS
        assert failure_of(get(url("/big"))) == FAILED_TOO_LARGE
        assert failure_of(get(url("/big-chunked"))) == FAILED_TOO_LARGE
        started = time.monotonic()
        assert failure_of(get(url("/slow"))) == FAILED_TIMEOUT
        assert time.monotonic() - started < 1.5
        assert failure_of(get(closed_port_url())) == FAILED_CONNECT
        assert fetch(client, url("/fine"), 0.5, len(VLLM_BODY)) == VLLM_BODY


def test_failing_targets_are_counted_logged_once_and_never_published(
    metrics_server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    metrics_server.answers.update(
        {
            "/error": Answer(status=500, body=b"internal error\n"),
            "/garbage": Answer(body=b"\x00\x01 not metrics {{{\n"),
            "/big": Answer(body=VLLM_BODY.encode() * 40, chunked=True),
            "/fine": Answer(),
        }
    )
    urls = [metrics_server.url(p) for p in ("/error", "/garbage", "/big", "/fine")]
    urls.append(closed_port_url())
    published: list[tuple[bytes, bytes]] = []
    scraper = EngineScraper(
        urls, 1.0, lambda key, value: published.append((key, value)), max_body_bytes=20_000
    )
    caplog.set_level(logging.INFO, logger="driftline.collectors.scrape")
    with httpx.Client() as client:
        for _ in range(3):
            for target in scraper.targets:
                scraper.scrape_once(target, client)
    states = {url: (s.state, dict(s.failures), s.scrapes) for url, s in scraper.stats.items()}
    assert states == {
        urls[0]: (FAILED_STATUS, {FAILED_STATUS: 3}, 3),
        urls[1]: (FAILED_PARSE, {FAILED_PARSE: 3}, 3),
        urls[2]: (FAILED_TOO_LARGE, {FAILED_TOO_LARGE: 3}, 3),
        urls[3]: (OK, {}, 3),
        urls[4]: (FAILED_CONNECT, {FAILED_CONNECT: 3}, 3),
    }
    # Only the healthy target's scrapes were published, keyed by its instance.
    assert [key for key, _ in published] == [f"127.0.0.1:{metrics_server.port}".encode()] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # one per failing target, not one per scrape
    for url in (urls[0], urls[1], urls[2], urls[4]):
        assert sum(url in line for line in warnings) == 1, warnings
    assert "0 failed" not in scraper.summary() and "15 scrapes, 12 failed" in scraper.summary()

    # The target recovers: one line says so, and its scrapes are published again.
    metrics_server.answers["/error"] = Answer()
    caplog.clear()
    with httpx.Client() as client:
        scraper.scrape_once(scraper.targets[0], client)
        scraper.scrape_once(scraper.targets[0], client)
    assert [r.getMessage() for r in caplog.records] == [
        f"engine scrape of {urls[0]} is back (127.0.0.1:{metrics_server.port})"
    ]
    assert scraper.stats[urls[0]].state == OK and len(published) == 5


def test_a_slow_target_does_not_delay_the_others(metrics_server: MetricsServer) -> None:
    metrics_server.answers.update({"/slow": Answer(delay_s=5.0), "/fine": Answer()})
    published: list[bytes] = []
    scraper = EngineScraper(
        [metrics_server.url("/slow"), metrics_server.url("/fine")],
        0.5,
        lambda key, value: published.append(value),
    )
    assert scraper.timeout_s == pytest.approx(0.4)  # below the interval
    scraper.start()
    time.sleep(2.2)
    started = time.monotonic()
    scraper.stop()
    stopped_in_s = time.monotonic() - started
    # Scrapes due at 0, 0.5, 1.0, 1.5 and 2.0 s: the fine target met every one of them.
    assert metrics_server.hits["/fine"] >= 4, metrics_server.hits
    assert len(published) == metrics_server.hits["/fine"]
    slow = scraper.stats[metrics_server.url("/slow")]
    assert slow.failures[FAILED_TIMEOUT] >= 3 and slow.messages == 0
    assert stopped_in_s < scraper.timeout_s + 1.0


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        EngineScraper([], 0, lambda key, value: None)


@pytest.mark.parametrize(
    ("engines", "message"),
    [
        ({"scrape_targets": ["vllm-0.internal:8000/metrics"]}, "not an http:// or https://"),
        ({"scrape_targets": ["ftp://vllm-0.internal/metrics"]}, "not an http:// or https://"),
        ({"scrape_targets": ["http://vllm-0.internal:80000/metrics"]}, "out of range"),
        ({"scrape_targets": ["http://a:8000/metrics", "http://a:8000/metrics"]}, "twice"),
        ({"scrape_targets": ["http://u:secret@vllm-0.internal/metrics"]}, "no user or password"),
        ({"scrape_interval_s": 0}, "greater than 0"),
    ],
)
def test_scrape_settings_are_checked(engines: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(engines=engines)


def test_scraping_is_off_by_default() -> None:
    engines = Settings().engines
    assert (engines.scrape_targets, engines.scrape_interval_s) == ([], 15.0)


def test_a_publish_the_producer_refuses_is_a_failed_scrape(metrics_server: MetricsServer) -> None:
    metrics_server.answers["/fine"] = Answer()

    def full_queue(key: bytes, value: bytes) -> None:
        raise BufferError("Local: Queue full")

    scraper = EngineScraper([metrics_server.url("/fine")], 1.0, full_queue)
    with httpx.Client() as client:
        scraper.scrape_once(scraper.targets[0], client)
    stats = scraper.stats[metrics_server.url("/fine")]
    assert (stats.state, dict(stats.failures), stats.messages) == (
        FAILED_PUBLISH,
        {FAILED_PUBLISH: 1},
        0,
    )
