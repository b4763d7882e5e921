"""The REST API's one route table: each endpoint's path, handler, parameters and responses, declared once. The aiohttp
routes and the OpenAPI document are both made from it, and the handlers read their parameters through the very
declarations the document describes, so the two cannot disagree."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHOWN_CHARS = 40  # of a bad value quoted back in an error: a client's 8 KB query string is not echoed whole
_DIGITS = re.compile(r"[+-]?[0-9]+")
INSTRUMENT_PATTERN = r"^[A-Za-z0-9_-]{1,30}$"  # a symbol, index id or contract, in any case
is_instrument = re.compile(INSTRUMENT_PATTERN).match


class ApiError(msgspec.Struct):
    error: str
    parameter: str | None = None


def shown(raw: str) -> str:
    """A client's value, quoted for an error message: cut short and repr-escaped."""
    return repr(raw) if len(raw) <= SHOWN_CHARS else f"{raw[:SHOWN_CHARS]!r}..."


@dataclass(frozen=True)
class Param:
    """A parameter as the OpenAPI document states it."""

    name: str
    description: str
    schema: dict[str, Any]
    where: str = "query"
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": self.where, "required": self.required or self.where == "path",
                "description": self.description, "schema": self.schema}


def instrument_param(name: str) -> Param:
    """A symbol, index id or contract in the path."""
    return Param(name, "A symbol, index id or futures contract, in any case",
                 {"type": "string", "pattern": INSTRUMENT_PATTERN, "examples": ["ACB"]}, where="path", required=True)


@dataclass(frozen=True)
class IntParam(Param):
    """An integer query parameter between `low` and `high`, `default` when absent. `read` answers the error a
    handler returns as is: 400 for what is not an integer, 422 for one out of range."""

    default: int = 0
    low: int = 0
    high: int = 0
    schema: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", {"type": "integer", "minimum": self.low, "maximum": self.high,
                                            "default": self.default})

    def read(self, request: web.Request, error: Callable[..., web.Response]) -> int | web.Response:
        raw = request.query.get(self.name)
        if raw is None:
            return self.default
        out_of_range = f"{self.name} must be between {self.low} and {self.high}, got {shown(raw)}"
        try:
            value = int(raw)
        except ValueError:  # not an integer, or one of more digits than Python converts (4,300)
            if _DIGITS.fullmatch(raw):
                return error(request, self.name, out_of_range, 422)
            return error(request, self.name, f"{self.name} must be an integer, got {shown(raw)}")
        if not self.low <= value <= self.high:
            return error(request, self.name, out_of_range, 422)
        return value


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: its method, what it answers with on success (a type the document's schema is generated from;
    `status` 200 unless said), the JSON body it takes (a Struct, for POST), the errors it may answer, the handler."""

    path: str
    operation_id: str
    summary: str
    handler: Handler
    answers: Any  # the success body's type (a Struct, list[Struct] ...)
    description: str = ""
    params: tuple[Param, ...] = ()
    errors: tuple[tuple[Any, ...], ...] = ()  # (status, when) with an ApiError body, or (status, when, body type)
    method: str = "get"
    body: Any = None  # the request body's type
    status: int = 200

    def route(self) -> web.RouteDef:
        return web.route(self.method.upper(), self.path, self.handler)


def openapi_paths(endpoints: list[Endpoint], ref: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The document's `paths` for `endpoints`; `ref(type)` gives a type's schema (a $ref into the components)."""
    error = {"application/json": {"schema": ref(ApiError)}}
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        responses = {str(endpoint.status): {"description": endpoint.description or endpoint.summary,
                                            "content": {"application/json": {"schema": ref(endpoint.answers)}}}}
        for status, when, *body in endpoint.errors:
            content = {"application/json": {"schema": ref(body[0])}} if body else error
            responses[str(status)] = {"description": when, "content": content}
        operation: dict[str, Any] = {"summary": endpoint.summary, "operationId": endpoint.operation_id,
                                     "responses": responses}
        if endpoint.params:
            operation["parameters"] = [param.openapi() for param in endpoint.params]
        if endpoint.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": ref(endpoint.body)}}}
        paths.setdefault(endpoint.path, {})[endpoint.method] = operation
    return paths


def answer_types(endpoints: list[Endpoint]) -> tuple[Any, ...]:
    """The types the endpoints answer with, errors' bodies included, for the document's components."""
    answers = [endpoint.answers for endpoint in endpoints]
    answers += [endpoint.body for endpoint in endpoints if endpoint.body is not None]
    answers += [body[0] for endpoint in endpoints for _, _, *body in endpoint.errors if body]
    return tuple(dict.fromkeys(answers))
