"""Records what openlit emits for the instrumentation matrix to replay.

openlit pins ``openai<3``, ``anthropic<1`` and an older OpenTelemetry SDK, so it cannot be
installed beside the project's lock. This script runs in an environment of its own, drives
openlit exactly as the matrix drives the other libraries (against the same local stub, with
``tests/integration/instrumentation_matrix.py``'s calls), and writes one OTLP protobuf
message per call kind to ``tests/unit/data/instrumentations/openlit-<version>.<kind>.otlp.pb``.
Message content capture is off, so the recording holds no prompt or answer. From the
repository root::

    python3 -m venv /tmp/openlit-env
    /tmp/openlit-env/bin/pip install openlit==1.45.0 'openai<3' 'anthropic<1' \\
        opentelemetry-exporter-otlp-proto-common
    /tmp/openlit-env/bin/python tests/compat/record_openlit.py
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from tests.integration import instrumentation_matrix as matrix  # noqa: E402
from tests.utils import openai_stub as stub  # noqa: E402

OUT = ROOT / "tests" / "unit" / "data" / "instrumentations"


def main() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "chat-app", "deployment.environment.name": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)  # openlit instruments through the global provider
    by_kind: dict[str, list[ReadableSpan]] = {kind: [] for kind in matrix.CALL_KINDS}

    def capture(kind: str, run: object) -> None:
        memory.clear()
        run()  # type: ignore[operator]
        provider.force_flush()
        by_kind[kind].extend(memory.get_finished_spans())

    with stub.OpenAIStub() as server:
        matrix.drive_openlit(matrix.Session(server, provider, capture))
    OUT.mkdir(parents=True, exist_ok=True)
    for kind, spans in by_kind.items():
        path = OUT / f"openlit-{version('openlit')}.{kind}.otlp.pb"
        path.write_bytes(encode_spans(spans).SerializeToString())
        print(f"{path.relative_to(ROOT)}: {len(spans)} spans")


if __name__ == "__main__":
    main()
