"""Secrets never cross into run parameters: checks done before a flow run is created.

Prefect stores every flow-run parameter in its database (and shows it in the UI), so a password
in `storage_options`, in a plate URL (`s3://user:pw@…`, `…?token=…`) or anywhere in a pipeline
document must be refused *before* the run exists, not when the flow compiles its plan. Three
places create runs and all three check:

* the CLI (`run`, `retry-failed`) and the Python API: `ParameterGuardedFlow.__call__` checks the
  call's parameters before Prefect's engine creates the run;
* deployments (`serve`, `prefect deploy`, the UI's Run form, `run_deployment`): the flow
  signature's types carry a JSON schema that the Prefect server enforces before it inserts the
  run (`enforce_parameter_schema`, on by default): mapping keys and string values that look like
  secrets are rejected with HTTP 409.

Credentials belong in Blocks (e.g. `OmeroCredentials`), and a run carries only the Block's name.
Messages name the parameter and key, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from prefect_hcs.errors import UserFacingError

#: Substrings of mapping keys that mark a secret (case-insensitive).
SECRET_WORDS = ("password", "passwd", "secret", "token", "key")
#: Query-parameter names that carry credentials in URLs (signed URLs, tokens).
_URL_SECRET_WORDS = (*SECRET_WORDS, "sig", "signature", "credential", "auth")

_FIX = (
    "Credentials go in a Block (e.g. an omero-credentials Block) and a run carries only its "
    "name (storage_options: {credentials_block: <name>}); nothing was sent to the Prefect server"
)


def _ci(word: str) -> str:
    """A case-insensitive regex for `word` without inline flags (portable to ECMA regexes)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


#: Regex of a key that looks like a secret (JSON-schema `pattern`, no inline flags).
SECRET_KEY_PATTERN = "(" + "|".join(_ci(w) for w in SECRET_WORDS) + ")"
#: Regex of a string holding a URL with a password (userinfo) or a secret query parameter.
SECRET_URL_PATTERN = (
    r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@\s]*:[^/?#@\s]*@"
    r"|[?&][^=&#\s]*(" + "|".join(_ci(w) for w in _URL_SECRET_WORDS) + r")[^=&#\s]*="
)
_KEY_RE = re.compile(SECRET_KEY_PATTERN)
_URL_RE = re.compile(SECRET_URL_PATTERN)


class SecretParameterError(UserFacingError, ValueError):
    """A run parameter looks like (or holds) a credential; the run was not created."""


def secret_parameter_problems(parameters: Mapping[str, Any]) -> list[str]:
    """One line per parameter value that looks like (or holds) a secret; [] when clean."""
    problems: list[str] = []
    for name, value in parameters.items():
        problems += _walk(value, name)
    return problems


def _walk(value: Any, where: str) -> list[str]:
    out: list[str] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    seen = 0
    while stack and seen < 100_000:
        node, path = stack.pop()
        seen += 1
        if isinstance(node, Mapping):
            for key, child in node.items():
                if isinstance(key, str) and _KEY_RE.search(key):
                    out.append(f"parameter {path!r}: key {key!r} looks like a secret")
                stack.append((child, f"{path}.{key}"))
        elif isinstance(node, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
        elif isinstance(node, str) and _URL_RE.search(node):
            out.append(
                f"parameter {path!r} holds a URL with a password or token in it (value not shown)"
            )
    return sorted(out)


def refusal(problems: list[str]) -> str:
    """The one message shown for refused parameters."""
    return "refused before creating the flow run: " + "; ".join(problems) + ". " + _FIX


class _NoSecretsSchema:
    """Pydantic metadata adding 'no secret keys / no secret URLs' to a parameter's JSON schema."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        _constrain(schema)
        return schema

    def __repr__(self) -> str:  # shown in signatures and docs
        return "NoSecrets"


def _constrain(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", []):
        _constrain(branch)
    kind = schema.get("type")
    if kind == "object":
        schema["propertyNames"] = {"not": {"pattern": SECRET_KEY_PATTERN}}
    elif kind == "string":
        schema["not"] = {"pattern": SECRET_URL_PATTERN}


NO_SECRETS = _NoSecretsSchema()
#: A URL or name parameter the Prefect server refuses when it holds a credential.
PlainStr = Annotated[str, NO_SECRETS]
#: A mapping parameter (storage options) whose keys must not look like secrets.
PlainMapping = Annotated[dict[str, Any], NO_SECRETS]
