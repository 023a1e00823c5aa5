"""Request and response schemas: the same models validate requests and generate ``/openapi.json``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator

from recsys.ingest.values import MAX_TIMESTAMP, RowError, check_text, to_id

MAX_K = 500


def _text(value: str) -> str:
    """The ingest's check (:func:`recsys.ingest.values.check_text`): no NUL bytes."""
    try:
        return check_text(value, None)
    except RowError as err:
        raise ValueError(err.reason) from None


def _id(value: str) -> str:
    """The ingest's id rule (:func:`recsys.ingest.values.to_id`): blanks stripped, not empty, no NUL."""
    try:
        return to_id(value, "id")
    except RowError as err:
        raise ValueError(err.reason) from None


def _no_nul(value: Any) -> Any:
    """No NUL byte in any key or string value of a JSON object, however deep."""
    if isinstance(value, str):
        _text(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v)
    return value


Text = Annotated[str, AfterValidator(_text)]
"""A string without NUL bytes (PostgreSQL cannot store them)."""
Id = Annotated[str, Field(min_length=1, max_length=255, description="non-blank, no NUL bytes"), AfterValidator(_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


class SimilarQuery(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    category: Text | None = Field(None, description="only items of this category")
    exclude: tuple[Text, ...] = Field((), description="comma-separated item ids to leave out")
    available_only: bool = Field(True, description="leave out unavailable items")

    _split_exclude = field_validator("exclude", mode="before")(_split)


class RecommendationsQuery(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="page size")
    exclude_seen: bool = Field(True, description="leave out items the user interacted with")
    category: Text | None = Field(None, description="only items of this category")
    exclude: tuple[Text, ...] = Field((), description="comma-separated item ids to leave out")
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="MMR trade-off: 0 = pure relevance, 1 = most diverse")
    max_per_category: int | None = Field(None, ge=1, description="cap on items of one category in a page")
    cursor: str | None = Field(None, max_length=4096, description="opaque cursor from the previous page's next_cursor")

    _split_exclude = field_validator("exclude", mode="before")(_split)


class SearchFilters(_Strict):
    category: Text | None = None
    available_only: StrictBool = Field(True, description="true or false (JSON booleans only)")
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)
    attributes: dict[str, Annotated[list[str], Field(min_length=1, max_length=100)]] = Field(
        {}, max_length=20,
        description='only items holding one of the listed values of each attribute, e.g. {"colour_group_name": ["Black"]}')


class SearchBody(_Strict):
    text: Text | None = Field(None, min_length=1, max_length=2000, description="text query")
    image: str | None = Field(None, description="base64-encoded image (JPEG/PNG/WebP...), or use multipart 'image'")
    user_id: Id | None = Field(None, description="personalise the ranking with this user's vector")
    k: int = Field(10, ge=1, le=MAX_K)
    filters: SearchFilters = SearchFilters()
    text_weight: float = Field(0.5, ge=0.0, le=1.0, description="weight of the text query when both are given")
    mode: Literal["hybrid", "lexical", "semantic"] | None = Field(
        None, description="hybrid (lexical + dense, the default), lexical (words only) or semantic (embedding only)")
    facets: list[str] = Field(
        [], max_length=20, description="count the matching items per value of these: 'category', an attribute, 'price'")


class Understood(BaseModel):
    phrase: str
    attributes: dict[str, str]


class SearchResponse(BaseModel):
    items: list[ScoredItem]
    model_version: str | None = None
    index_version: str | None = None
    mode: str = Field(description="the retrieval mode; an interleaved search experiment's answer names both, 'a+b'")
    experiment: str | None = Field(None, description="the active search experiment that served this answer")
    variant: str | None = Field(None, description="its variant ('interleaved' for team-draft interleaving)")
    facets: dict[str, dict[str, int]] = {}
    corrected: str | None = Field(None, description="the query after spelling correction, when a word was corrected")
    understood: list[Understood] = Field([], description="attribute values recognised in the query (boosted)")


class EventIn(_Strict):
    user_id: Id
    item_id: Id
    event_type: Text = Field(min_length=1, max_length=64)
    timestamp: int | str | None = Field(
        None, description="unix seconds (0 and up) or ISO 8601; default: now",
        json_schema_extra={"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_TIMESTAMP}, {"type": "string"},
                                     {"type": "null"}]})
    value: float | None = None
    event_id: Id | None = Field(None, description="unique per user: a repeat of (user_id, event_id) is a duplicate; "
                                                  "default: derived from the event")
    request_id: Id | None = Field(None, description="the request_id of the served list that led to this event "
                                                    "(attribution; at most 64 characters are matched)")
    position: int | None = Field(None, ge=0, le=10_000, description="the item's 0-based position in that list")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        """Unix seconds as a JSON integer in ``[0, MAX_TIMESTAMP]`` (no booleans, no fractions), or a string."""
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f"expected unix seconds as an integer (0 to {MAX_TIMESTAMP}) or an ISO 8601 string")
        if isinstance(value, int) and not 0 <= value <= MAX_TIMESTAMP:
            raise ValueError(f"a timestamp must lie between 0 (1970-01-01) and {MAX_TIMESTAMP} (9999-12-31), got {value}")
        return _text(value) if isinstance(value, str) else value


class EventsBody(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class ItemIn(_Strict):
    title: Text = Field(min_length=1, max_length=2000)
    description: Text = Field("", max_length=100_000)
    category: Text | None = Field(None, max_length=255)
    image: Text | None = Field(None, max_length=4096, description=(
        "an http(s) URL reaching a public address (or a host in images.allowed_hosts), or a path under "
        "<data_dir>/images or images.roots (a relative path is taken from <data_dir>/images)"))
    price: float | None = Field(None, ge=0)
    available: StrictBool = Field(True, description="true or false (JSON booleans only)")
    attributes: Annotated[dict[str, Any], AfterValidator(_no_nul)] = {}


class ItemBatchEntry(ItemIn):
    id: Id


class ItemsBody(_Strict):
    items: list[ItemBatchEntry] = Field(min_length=1, max_length=10_000)


class Reason(BaseModel):
    type: str
    item: str | None = None
    detail: str | None = None


class ScoredItem(BaseModel):
    id: str
    score: float
    title: str | None = None
    category: str | None = None
    reasons: list[Reason] = []


class ItemsResponse(BaseModel):
    request_id: str = Field(description="id of this served list; send it with events it leads to")
    items: list[ScoredItem]
    model_version: str | None = None
    index_version: str | None = None
    degraded: bool = False
    """Present (true) when the database could not be read and the answer was computed without it."""


class FeedResponse(ItemsResponse):
    user_id: str
    cold_start: bool
    next_cursor: str | None = None
    experiment: str | None = Field(None, description="the active feed experiment that served this list")
    variant: str | None = Field(None, description="its variant ('interleaved' for team-draft interleaving)")


class Rejected(BaseModel):
    index: int
    field: str | None = None
    reason: str


class EventsResponse(BaseModel):
    inserted: int
    duplicates: int
    rejected: list[Rejected]
    replayed: bool = False
    """Present (true) when this is the stored outcome of an earlier request with the same Idempotency-Key."""


class UpsertResponse(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    embedded: int
    servable: bool


class ErrorDetail(BaseModel):
    status: int
    message: str
    field: str | None = Field(None, description="the offending field: query.k, body.events[3].timestamp, path.item_id")
    details: Any = Field(None, description="every problem, when there are several")
    dependency: str | None = Field(None, description="503: what is unavailable (database, artifacts)")


SearchResponse.model_rebuild()


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        desc = prop.pop("description", None)
        entry: dict[str, Any] = {"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop}
        if desc:
            entry["description"] = desc
        out.append(entry)
    return out


_ERRORS = {
    "400": "invalid request: error.field names the offending field",
    "401": "missing or wrong API key (X-API-Key or Authorization: Bearer)",
    "403": "the endpoint needs an API key and none is configured (service.api_keys)",
    "404": "unknown id",
    "405": "method not allowed (the Allow header lists the allowed ones)",
    "413": "request body larger than service.max_body_bytes",
    "415": "the body is not JSON (Content-Type: application/json)",
    "422": "a well-formed request this deployment cannot answer, or an Idempotency-Key reused with another body",
    "503": "a dependency (error.dependency: database, artifacts) is unavailable; retry after Retry-After seconds",
}


def openapi_spec(version: str) -> dict[str, Any]:
    """OpenAPI 3.1 document generated from the models above."""
    comps: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            comps[name] = sub
        comps[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref(model)}}}

    def responses(model: type[BaseModel] | None, errors: str, desc: str = "OK") -> dict[str, Any]:
        """200 (with ``model``) plus the error statuses in ``errors`` (space-separated), all with ErrorResponse."""
        resp: dict[str, Any] = {"200": {"description": desc}}
        if model is not None:
            resp["200"]["content"] = {"application/json": {"schema": ref(model)}}
        for status in errors.split():
            resp[status] = {"description": _ERRORS[status], "content": {"application/json": {"schema": ref(ErrorResponse)}}}
            if status == "503":
                resp[status]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
            if status == "405":
                resp[status]["headers"] = {"Allow": {"description": "allowed methods", "schema": {"type": "string"}}}
        return resp

    def get(model: type[BaseModel], errors: str) -> dict[str, Any]:
        """A GET's responses: also 414 (gunicorn refuses request lines over 4094 bytes, before the app)."""
        return {**responses(model, errors), "414": {"description": "request line too long (the server's limit, "
                                                                       "gunicorn: 4094 bytes); not JSON"}}

    read_errors = "400 401 403 405 503"
    write_errors = "400 401 403 405 413 415 503"
    key = [{"apiKey": []}]
    item_id = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
    user_id = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
            "description": "one key per batch: a retry with the same key gets the first outcome back and writes nothing"}
    events_responses = responses(EventsResponse, write_errors + " 422", "events stored")
    events_responses["207"] = {"description": "some events stored, the bad ones listed in 'rejected'",
                               "content": {"application/json": {"schema": ref(EventsResponse)}}}
    paths = {
        "/v1/items/{item_id}/similar": {"get": {
            "summary": "Similar items (the item-page widget)", "parameters": [item_id, *_params(SimilarQuery)],
            "responses": get(ItemsResponse, read_errors + " 404")}},
        "/v1/users/{user_id}/recommendations": {"get": {
            "summary": "Home-feed candidates for a user", "parameters": [user_id, *_params(RecommendationsQuery)],
            "responses": get(FeedResponse, read_errors)}},
        "/v1/search": {"post": {
            "summary": "Multimodal product search: text, image or both",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref(SearchBody)},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "image": {"type": "string", "format": "binary"}, "text": {"type": "string"},
                    "user_id": {"type": "string"}, "k": {"type": "integer"}, "category": {"type": "string"},
                    "mode": {"type": "string", "enum": ["hybrid", "lexical", "semantic"]}}}}}},
            "responses": responses(SearchResponse, read_errors + " 413 415 422")}},
        "/v1/events": {"post": {"summary": "Record a batch of events (API key)", "security": key, "parameters": [idem],
                                "requestBody": body(EventsBody), "responses": events_responses}},
        "/v1/items/{item_id}": {"put": {"summary": "Upsert one item (API key)", "security": key, "parameters": [item_id],
                                        "requestBody": body(ItemIn), "responses": responses(UpsertResponse, write_errors)}},
        "/v1/items": {"put": {"summary": "Upsert a batch of items (API key)", "security": key, "requestBody": body(ItemsBody),
                              "responses": responses(UpsertResponse, write_errors)}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness: artifacts loaded, database reachable",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "recsys", "version": version},
        "paths": paths,
        "components": {"schemas": comps, "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
