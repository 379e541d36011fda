"""Adapters that put a knowrec recommender inside other frameworks.

Each adapter is an optional extra and imports its framework only when its own module is imported:

* :mod:`knowrec.integrations.langchain` (``pip install 'knowrec[langchain]'``): a LangChain retriever and agent
  tools over any :class:`~knowrec.api.RecommenderAPI`.
"""
