"""The simulated workflows, each with its own instrumentation convention."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..incidents import Effects
from ..plan import SpanPlan, TraceContext
from . import agent_planner, batch_summarizer, rag_search, support_chat
from .common import Traffic

BuildFn = Callable[[Traffic, Effects, int, str], tuple[TraceContext, SpanPlan]]


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    service: str
    weight: float  # share of requests
    build: BuildFn
    approved_models: tuple[str, ...]


WORKFLOWS: Final[tuple[Workflow, ...]] = (
    Workflow(
        support_chat.NAME,
        support_chat.SERVICE,
        0.45,
        support_chat.build,
        support_chat.APPROVED_MODELS,
    ),
    Workflow(
        rag_search.NAME, rag_search.SERVICE, 0.3, rag_search.build, rag_search.APPROVED_MODELS
    ),
    Workflow(
        agent_planner.NAME,
        agent_planner.SERVICE,
        0.15,
        agent_planner.build,
        agent_planner.APPROVED_MODELS,
    ),
    Workflow(
        batch_summarizer.NAME,
        batch_summarizer.SERVICE,
        0.1,
        batch_summarizer.build,
        batch_summarizer.APPROVED_MODELS,
    ),
)
WORKFLOW_NAMES: Final = tuple(w.name for w in WORKFLOWS)

__all__ = ["WORKFLOWS", "WORKFLOW_NAMES", "Traffic", "Workflow"]
