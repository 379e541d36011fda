"""knowrec: an LLM recommender with knowledge-graph injection.

Example:
    >>> from knowrec import Recommender, Settings
    >>> rec = Recommender(Settings(data_dir="/tmp/knowrec-demo"))  # doctest: +SKIP
    >>> rec.ingest_demo()  # doctest: +SKIP
    >>> rec.recommend("1", k=5).items[0].reasons  # doctest: +SKIP
"""

from knowrec.config import Settings
from knowrec.errors import ConfigError, InvalidInput, InvalidSetting, KnowrecError, LLMError, NotFound, StoreUnavailable
from knowrec.recommender import Recommender
from knowrec.types import (
    Candidate,
    ChatProfile,
    ChatProgress,
    ChatTurn,
    Fact,
    IngestSummary,
    Interaction,
    Item,
    KGPath,
    Reason,
    Recommendation,
    RecommendedItem,
    RecQuery,
)

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "ChatProfile",
    "ChatProgress",
    "ChatTurn",
    "ConfigError",
    "Fact",
    "IngestSummary",
    "Interaction",
    "InvalidInput",
    "InvalidSetting",
    "Item",
    "KGPath",
    "KnowrecError",
    "LLMError",
    "NotFound",
    "Reason",
    "RecQuery",
    "Recommendation",
    "RecommendedItem",
    "Recommender",
    "Settings",
    "StoreUnavailable",
    "__version__",
]
