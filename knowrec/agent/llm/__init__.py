"""LLM clients."""

from knowrec.agent.llm.base import LLMClient, LLMReply, Message

__all__ = ["LLMClient", "LLMReply", "Message"]
