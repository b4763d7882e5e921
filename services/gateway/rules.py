"""The users' alert rules over REST: listed from KV `alert_rules` (watched), created or replaced and deleted there;
the alerts service watches the same bucket and applies them. Token-protected whenever GATEWAY_TOKEN is set, whatever
GATEWAY_TOKEN_REST says (see `auth_middleware`): they change what the service raises for everyone."""

from __future__ import annotations

import msgspec
from aiohttp import web
from nats.js.kv import KeyValue

from services.gateway.api import bad_parameter, json_response
from services.gateway.routes import ApiError, Endpoint, Param, shown
from shared.messages.domain import AlertRule

RULES_PATH = "/api/alerts/rules"
MAX_RULES = 1_000  # a few per watched symbol: more is a client gone wrong, not a trader
MAX_BODY_BYTES = 4_096
RULE_ID = Param("id", "The rule's id", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"}, where="path",
                required=True)
_decode_rule = msgspec.json.Decoder(AlertRule).decode
NO_TOKEN = (401, "GATEWAY_TOKEN is set and the token is missing or wrong")


class Deleted(msgspec.Struct):
    deleted: str


class AlertRules:
    def __init__(self) -> None:
        self.rules: dict[str, AlertRule] = {}  # as the bucket holds them, kept by the gateway's watch
        self.kv: KeyValue | None = None

    def changed(self, key: str, value: bytes | None) -> None:
        """The watch's update: a rule set or deleted (one that does not decode is refused by the watch)."""
        if value is None:
            self.rules.pop(key, None)
        else:
            self.rules[key] = _decode_rule(value)

    def loaded(self, entries: dict[str, bytes]) -> None:
        self.rules = {}
        for key, value in entries.items():
            try:
                self.rules[key] = _decode_rule(value)
            except msgspec.DecodeError:
                continue  # not a rule: the alerts service refuses it too

    async def listed(self, request: web.Request) -> web.Response:
        return json_response(request, sorted(self.rules.values(), key=lambda rule: rule.id))

    async def put(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return json_response(request, ApiError(error=f"a rule is at most {MAX_BODY_BYTES} bytes"), 413)
        try:
            rule = _decode_rule(body)
        except msgspec.DecodeError as err:
            return bad_parameter(request, "body", f"not a rule: {shown(str(err))}", 422)
        if rule.id not in self.rules and len(self.rules) >= MAX_RULES:
            return json_response(request, ApiError(error=f"at most {MAX_RULES} rules"), 409)
        assert self.kv is not None
        await self.kv.put(rule.id, msgspec.json.encode(rule))
        self.rules[rule.id] = rule  # the watch says the same a moment later
        return json_response(request, rule, 201)

    async def delete(self, request: web.Request) -> web.Response:
        rule_id = request.match_info["id"]
        if rule_id not in self.rules:
            return json_response(request, ApiError(error=f"no rule {shown(rule_id)}", parameter="id"), 404)
        assert self.kv is not None
        await self.kv.delete(rule_id)
        self.rules.pop(rule_id, None)
        return json_response(request, Deleted(deleted=rule_id))

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(RULES_PATH, "alertRules", "The users' alert rules, by id", self.listed, list[AlertRule],
                     errors=(NO_TOKEN,)),
            Endpoint(RULES_PATH, "putAlertRule", "Create a rule, or replace the one of the same id", self.put,
                     AlertRule, method="post", body=AlertRule, status=201,
                     errors=(NO_TOKEN, (403, "a browser's request from an origin not allowed"),
                             (409, f"{MAX_RULES} rules already"), (413, "the body is too large"),
                             (422, "the body is not a rule"))),
            Endpoint(RULES_PATH + "/{id}", "deleteAlertRule", "Delete a rule", self.delete, Deleted,
                     method="delete", params=(RULE_ID,),
                     errors=(NO_TOKEN, (403, "a browser's request from an origin not allowed"),
                             (404, "no such rule"))),
        ]
