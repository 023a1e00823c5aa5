"""Request and response schemas: the same models validate requests and generate ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_K = 500


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


class SimilarQuery(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    category: str | None = Field(None, description="only items of this category")
    exclude: tuple[str, ...] = Field((), description="comma-separated item ids to leave out")
    available_only: bool = Field(True, description="leave out unavailable items")

    _split_exclude = field_validator("exclude", mode="before")(_split)


class RecommendationsQuery(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="page size")
    exclude_seen: bool = Field(True, description="leave out items the user interacted with")
    category: str | None = Field(None, description="only items of this category")
    exclude: tuple[str, ...] = Field((), description="comma-separated item ids to leave out")
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="MMR trade-off: 0 = pure relevance, 1 = most diverse")
    max_per_category: int | None = Field(None, ge=1, description="cap on items of one category in a page")
    cursor: str | None = Field(None, description="opaque cursor from the previous page's next_cursor")

    _split_exclude = field_validator("exclude", mode="before")(_split)


class SearchFilters(_Strict):
    category: str | None = None
    available_only: bool = True
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)


class SearchBody(_Strict):
    text: str | None = Field(None, min_length=1, max_length=2000, description="text query")
    image: str | None = Field(None, description="base64-encoded image (JPEG/PNG/WebP...), or use multipart 'image'")
    user_id: str | None = Field(None, description="personalise the ranking with this user's vector")
    k: int = Field(10, ge=1, le=MAX_K)
    filters: SearchFilters = SearchFilters()
    text_weight: float = Field(0.5, ge=0.0, le=1.0, description="weight of the text query when both are given")


class EventIn(_Strict):
    user_id: str = Field(min_length=1, max_length=255)
    item_id: str = Field(min_length=1, max_length=255)
    event_type: str = Field(min_length=1, max_length=64)
    timestamp: int | str | None = Field(None, description="unix seconds or ISO 8601; default: now")
    value: float | None = None
    event_id: str | None = Field(None, max_length=255, description="idempotency key; default: derived from the event")
    request_id: str | None = Field(None, min_length=1, max_length=64,
                                   description="the request_id of the served list that led to this event (attribution)")
    position: int | None = Field(None, ge=0, le=10_000, description="the item's 0-based position in that list")


class EventsBody(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class ItemIn(_Strict):
    title: str = Field(min_length=1, max_length=2000)
    description: str = Field("", max_length=100_000)
    category: str | None = Field(None, max_length=255)
    image: str | None = Field(None, max_length=4096, description=(
        "an http(s) URL reaching a public address (or a host in images.allowed_hosts), or a path under "
        "<data_dir>/images or images.roots (a relative path is taken from <data_dir>/images)"))
    price: float | None = Field(None, ge=0)
    available: bool = True
    attributes: dict[str, Any] = {}


class ItemBatchEntry(ItemIn):
    id: str = Field(min_length=1, max_length=255)


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


class FeedResponse(ItemsResponse):
    user_id: str
    cold_start: bool
    next_cursor: str | None = None
    experiment: str | None = Field(None, description="the active feed experiment that served this list")
    variant: str | None = Field(None, description="its variant ('interleaved' for team-draft interleaving)")


class ErrorResponse(BaseModel):
    error: dict[str, Any]


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

    def ok(model: type[BaseModel] | None, desc: str = "OK") -> dict[str, Any]:
        resp: dict[str, Any] = {
            "200": {"description": desc},
            "400": {"description": "invalid request", "content": {"application/json": {"schema": ref(ErrorResponse)}}},
        }
        if model is not None:
            resp["200"]["content"] = {"application/json": {"schema": ref(model)}}
        return resp

    item_id = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
    user_id = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/items/{item_id}/similar": {"get": {
            "summary": "Similar items (the item-page widget)", "parameters": [item_id, *_params(SimilarQuery)],
            "responses": {**ok(ItemsResponse), "404": {"description": "unknown item"}}}},
        "/v1/users/{user_id}/recommendations": {"get": {
            "summary": "Home-feed candidates for a user", "parameters": [user_id, *_params(RecommendationsQuery)],
            "responses": ok(FeedResponse)}},
        "/v1/search": {"post": {
            "summary": "Multimodal product search: text, image or both",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref(SearchBody)},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "image": {"type": "string", "format": "binary"}, "text": {"type": "string"},
                    "user_id": {"type": "string"}, "k": {"type": "integer"}, "category": {"type": "string"}}}}}},
            "responses": ok(ItemsResponse)}},
        "/v1/events": {"post": {"summary": "Record a batch of events (API key)", "requestBody": body(EventsBody),
                                "responses": ok(None, "events stored; bad ones listed")}},
        "/v1/items/{item_id}": {"put": {"summary": "Upsert one item (API key)", "parameters": [item_id],
                                        "requestBody": body(ItemIn), "responses": ok(None)}},
        "/v1/items": {"put": {"summary": "Upsert a batch of items (API key)", "requestBody": body(ItemsBody),
                              "responses": ok(None)}},
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


