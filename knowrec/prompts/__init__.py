"""Prompt templates: versioned Jinja files whose variables are checked when they are loaded.

Each ``*.jinja`` file here starts with a header comment::

    {#- knowrec-prompt id=rank_verbalizer version=1 variables=history,candidates,query -#}

Loading checks that the variables the template uses are exactly the declared ones, and rendering checks that the
caller passes all of them, so a renamed variable fails loudly instead of rendering an empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from jinja2 import meta

from knowrec.errors import ConfigError

__all__ = ["Prompt", "available_prompts", "load_prompt"]

_HEADER = re.compile(r"\{#-?\s*knowrec-prompt\s+(?P<body>[^#]*?)\s*-?#\}")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False)


@cache
def _compiled(source: str) -> jinja2.Template:
    """A prompt's template, compiled once (rankers render per request, pointwise once per candidate)."""
    return _ENV.from_string(source)


@dataclass(frozen=True)
class Prompt:
    """A loaded template. ``render`` returns the text with the header removed."""

    id: str
    version: str
    variables: frozenset[str]
    source: str

    @property
    def ref(self) -> str:
        """``id@version``, recorded in results."""
        return f"{self.id}@{self.version}"

    def render(self, **values: Any) -> str:
        """Render with exactly the declared variables.

        Example:
            >>> p = load_prompt("rank_verbalizer")
            >>> sorted(p.variables)
            ['candidates', 'history', 'query']
        """
        missing = self.variables - values.keys()
        extra = values.keys() - self.variables
        if missing or extra:
            raise ConfigError(f"prompt {self.ref}: missing variables {sorted(missing)}, unexpected {sorted(extra)}")
        return _compiled(self.source).render(**values).strip()


def available_prompts() -> list[str]:
    """Names of the bundled prompt files (without ``.jinja``)."""
    root = resources.files(__package__)
    return sorted(p.name.removesuffix(".jinja") for p in root.iterdir() if p.name.endswith(".jinja"))


@cache
def load_prompt(name: str) -> Prompt:
    """Load ``knowrec/prompts/<name>.jinja`` and check its declared variables against the template."""
    path = resources.files(__package__) / f"{name}.jinja"
    if not path.is_file():
        raise ConfigError(f"no prompt named {name!r}; available: {', '.join(available_prompts())}")
    text = path.read_text(encoding="utf-8")
    m = _HEADER.search(text)
    if m is None:
        raise ConfigError(
            f"prompt file {name}.jinja lacks its '{{#- knowrec-prompt id=… version=… variables=… #}}' header"
        )
    fields = dict(kv.split("=", 1) for kv in m.group("body").split())
    declared = frozenset(v for v in fields.get("variables", "").split(",") if v)
    used = meta.find_undeclared_variables(_ENV.parse(text))
    if used != declared:
        raise ConfigError(f"prompt file {name}.jinja declares variables {sorted(declared)} but uses {sorted(used)}")
    source = text[: m.start()] + text[m.end() :]
    return Prompt(id=fields.get("id", name), version=fields.get("version", "0"), variables=declared, source=source)
