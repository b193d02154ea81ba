"""driftline: runtime governance for production LLM systems."""

__version__ = "0.1.0"
