"""docs/instrumenting.md's Python example, run as written, says what driftline stores.

The example runs in a child process with the OTLP/HTTP exporter pointed at a local receiver;
an LLM call, as an instrumentation would make it, takes the place of the comment inside the
workflow's span. The received export is normalized and its traces assembled offline.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driftline.config import Settings
from driftline.streams.pipeline import OfflinePipeline

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/instrumenting.md"
CALL_PLACEHOLDER = "    # ... the instrumented OpenAI / Anthropic / framework calls happen here ..."
LLM_CALL = """    with tracer.start_as_current_span("chat gpt-4o-mini") as call:
        call.set_attribute("gen_ai.operation.name", "chat")
        call.set_attribute("gen_ai.provider.name", "openai")
        call.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        call.set_attribute("gen_ai.usage.input_tokens", 812)
        call.set_attribute("gen_ai.usage.output_tokens", 64)"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()


def test_the_python_example_gives_the_call_its_workflow_tenant_route_and_bundle(
    receiver: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    endpoint, received = receiver
    example = next(b for b in python_blocks(DOC.read_text()) if "TracerProvider" in b)
    assert CALL_PLACEHOLDER in example
    script = tmp_path / "example.py"
    script.write_text(example.replace(CALL_PLACEHOLDER, LLM_CALL))
    run = subprocess.run(
        [sys.executable, str(script)],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert received, "the example exported nothing"

    pipeline = OfflinePipeline.from_settings(Settings())
    for payload in received:
        pipeline.feed(payload)
    result = pipeline.finish()
    assert result.rejects == []
    (event,) = result.events
    assert (event["workflow"], event["tenant"], event["route"]) == ("support-chat", "acme", "/chat")
    assert (event["service"], event["environment"]) == ("support-api", "production")
    assert (event["prompt_version"], event["retrieval_index_version"]) == (
        "support-v7",
        "kb-2026-11",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (812, 64)


def test_the_bundle_id_example_prints_the_id_driftline_computes() -> None:
    from driftline.schemas.event import bundle_id

    example = next(b for b in python_blocks(DOC.read_text()) if "bundle_id(" in b)
    run = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == bundle_id("gpt-4o-mini", "", "support-v7", "kb-2026-11", "")
