"""The OpenAPI document as the server behaves: request bodies as msgspec checks them (the
limits, patterns and forbidden unknown fields Litestar's generator leaves out), and every
refusal a route can give, each with the body every refusal has (``{error, detail}``), in
place of Litestar's default error body, which this server never sends."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import cache
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
)

from .bodies import ErrorBody, NewConversation, NewMessage
from .errors import RETRY_AFTER_S

# Request bodies whose schema msgspec states in full.
REQUEST_BODIES: tuple[type[msgspec.Struct], ...] = (NewConversation, NewMessage)

# Why each refusal happens, for the document's readers.
WHY = {
    400: "Malformed: a body or parameter that does not decode or fit its schema",
    401: "Missing or wrong bearer token",
    403: "Missing or wrong secret, or the route is off (no token or secret configured)",
    404: "No such conversation or flow",
    409: "Not allowed now (the conversation ended, the flow expired, a concurrent writer)",
    413: "The body is larger than the server accepts",
    422: "Well-formed, but refused (a NUL character, a value out of range, a domain rule)",
    503: "The database is unreachable or the read models are not built yet: retry later",
}


# Answers a route gives besides its usual success.
ALSO_SUCCEEDS = {
    ("/v1/conversations", "post"): (
        200,
        "ConversationStarted",
        "The conversation its channel and chat id name exists already: that one",
    ),
}
INT64 = (-(2**63), 2**63 - 1)

# Routes that acknowledge (200) a body whose text holds a NUL character rather than refuse
# it: the channel would redeliver a refused one for as long as it tries. Their documented
# bodies leave NUL allowed, as the server takes them (and records nothing).
ACKNOWLEDGES_NUL = {("/telegram/webhook", "post")}
NUL_FREE = r"^[^\x00]*$"


def _exact_integers(schema: Any) -> None:
    """Integer bounds as exact integers, within 64 bits (Litestar writes them as floats,
    and 2**63 - 1 as a float is 2**63: one past what the server takes)."""
    if not isinstance(schema, Schema):
        return
    for branch in schema.one_of or ():
        _exact_integers(branch)
    if schema.type != "integer" and getattr(schema.type, "value", None) != "integer":
        return
    low, high = INT64
    if schema.minimum is not None:
        low = max(low, int(schema.minimum)) if schema.minimum > low else low
    if schema.maximum is not None:
        high = min(high, int(schema.maximum)) if schema.maximum < high else high
    schema.minimum, schema.maximum = low, high


def refusals(path: str, method: str, operation: Operation) -> list[int]:
    """The refusals one route can give."""
    if path in ("/readyz", "/healthz"):
        return [503]
    if path == "/livez":
        return []
    statuses = [400, 422, 503]
    if path.startswith("/v1/"):
        statuses += [401, 403]
    else:  # the webhook: Telegram's secret
        statuses += [403]
    if "{" in path:
        statuses.append(404)
    if method == "post":
        statuses += [409, 413]
    return sorted(set(statuses))


def document(app: Litestar) -> OpenAPI:
    """Fix the app's OpenAPI document in place (before it is first served)."""
    openapi = app.openapi_schema
    assert openapi.components is not None
    schemas = openapi.components.schemas = dict(openapi.components.schemas or {})
    for body in REQUEST_BODIES:
        generated = msgspec.json.schema(body, ref_template="#/components/schemas/{name}")
        for name, definition in generated.get("$defs", {}).items():
            schemas[name] = _schema(definition)
    schemas["ErrorBody"] = _schema(_definition(ErrorBody))
    for schema in schemas.values():
        if isinstance(schema, Schema) and schema.properties == {} and schema.type == "object":
            schema.max_properties = 0  # a body without fields is sent as {} and nothing else
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            for parameter in operation.parameters or ():
                _exact_integers(getattr(parameter, "schema", None))
            if (path, method) in ACKNOWLEDGES_NUL and operation.request_body is not None:
                for media in (getattr(operation.request_body, "content", None) or {}).values():
                    _allow_nul(media.schema, schemas, set())
            responses = dict(operation.responses or {})
            also = ALSO_SUCCEEDS.get((path, method))
            if also is not None:
                status, body, why = also
                responses[str(status)] = OpenAPIResponse(
                    description=why,
                    content={
                        "application/json": OpenAPIMediaType(
                            schema=Reference(f"#/components/schemas/{body}")
                        )
                    },
                )
            for status in refusals(path, method, operation):
                own = responses.get(str(status))
                if _states_its_own_body(own):
                    # A refusal whose body says more (ConflictBody, BehindBody) keeps it.
                    assert isinstance(own, OpenAPIResponse)
                    own.headers = _refusal(status, path).headers
                else:
                    responses[str(status)] = _refusal(status, path)
            operation.responses = responses
    return openapi


def _allow_nul(node: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    """Drop the NUL-free pattern from a schema and every schema it refers to."""
    if isinstance(node, Reference):
        name = node.ref.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _allow_nul(schemas.get(name), schemas, seen)
        return
    if not isinstance(node, Schema):
        return
    if node.pattern == NUL_FREE:
        node.pattern = None
    children = [*(node.properties or {}).values(), *(node.one_of or ()), *(node.any_of or ())]
    children += [*(node.all_of or ()), node.items]
    for child in children:
        _allow_nul(child, schemas, seen)


# Refusals whose body carries more than `{error, detail}`, as routes declare them.
OWN_BODIES = ("#/components/schemas/ConflictBody", "#/components/schemas/BehindBody")


def _states_its_own_body(response: Any) -> bool:
    """Whether a route declared this refusal with a body of its own (see `OWN_BODIES`)."""
    content = getattr(response, "content", None) or {}
    media = content.get("application/json")
    schema = getattr(media, "schema", None)
    return isinstance(schema, Reference) and schema.ref in OWN_BODIES


def _refusal(status: int, path: str) -> OpenAPIResponse:
    headers = None
    if status == 503:
        retry = OpenAPIHeader(
            schema=Schema(type="integer", minimum=1),
            description=f"seconds to wait before trying again ({RETRY_AFTER_S})",
        )
        headers = {"Retry-After": retry}
    body = "Health" if path in ("/readyz", "/healthz") else "ErrorBody"
    return OpenAPIResponse(
        description=WHY[status],
        headers=headers,
        content={
            "application/json": OpenAPIMediaType(schema=Reference(f"#/components/schemas/{body}"))
        },
    )


def _definition(struct: type[msgspec.Struct]) -> dict[str, Any]:
    generated = msgspec.json.schema(struct, ref_template="#/components/schemas/{name}")
    return generated["$defs"][struct.__name__]


@cache
def _aliases() -> dict[str, str]:
    """JSON Schema keywords to the fields of Litestar's Schema."""
    return {
        str(f.metadata.get("alias", f.name)): f.name
        for f in dataclasses.fields(Schema)  # type: ignore[arg-type]
    }


_SCHEMA_VALUED = {"items", "additionalProperties", "propertyNames", "not"}
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems"}


def _schema(definition: dict[str, Any]) -> Schema | Reference:
    """A JSON Schema (as msgspec writes it) as Litestar's Schema object."""
    if "$ref" in definition:
        return Reference(definition["$ref"])
    fields: dict[str, Any] = {}
    for keyword, value in definition.items():
        name = _aliases().get(keyword)
        if name is None:
            continue  # a keyword OpenAPI 3.1 has no field for here (none msgspec writes)
        if keyword == "properties":
            value = {k: _schema(v) for k, v in value.items()}
        elif keyword in _SCHEMA_VALUED and isinstance(value, dict):
            value = _schema(value)
        elif keyword in _SCHEMA_LISTS:
            value = [_schema(v) for v in value]
        elif keyword == "required":
            value = list(value)
        fields[name] = value
    return Schema(**fields)


def described(statuses: Iterable[int]) -> dict[int, str]:
    """The reasons for some refusals (for tests and docs)."""
    return {status: WHY[status] for status in statuses}
