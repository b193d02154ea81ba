"""The offline pipeline (``driftline normalize``/``replay``/``load``) applies ``[ingest]``."""

from __future__ import annotations

from driftline.config import IngestSettings, Settings
from driftline.schemas import attributes as a
from driftline.streams.pipeline import OfflinePipeline
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
PROMPT_KEY = "llm.prompts.0.content"


def recorded_call() -> bytes:
    span = f.make_span(
        trace_id=TRACE_ID,
        span_id=b"\x0c" * 8,
        attributes={
            a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
            a.GEN_AI_REQUEST_MODEL: "gpt-4o",
            PROMPT_KEY: "what the user typed",
            "gen_ai.request.temperature": 0.2,
        },
    )
    return f.traces_data(f.make_resource_spans([span])).SerializeToString()


def attributes_stored(settings: Settings) -> dict[str, str]:
    pipeline = OfflinePipeline.from_settings(settings)
    pipeline.feed(recorded_call())
    (event,) = pipeline.finish().events
    return dict(event["attributes"])


def test_content_stays_out_by_default() -> None:
    assert attributes_stored(Settings()) == {"gen_ai.request.temperature": "0.2"}


def test_store_content_opt_in_reaches_the_offline_pipeline() -> None:
    settings = Settings(ingest=IngestSettings(store_content=True))
    assert attributes_stored(settings)[PROMPT_KEY] == "what the user typed"


def test_allow_list_reaches_the_offline_pipeline() -> None:
    settings = Settings(ingest=IngestSettings(attributes_allow=["llm.prompts.*"]))
    assert attributes_stored(settings) == {PROMPT_KEY: "what the user typed"}
