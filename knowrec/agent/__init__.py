"""The recommendation agent: retrieval, LLM ranking, diversification, explanation."""
