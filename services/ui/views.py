"""The playground's pages: search, item, user (home feed), overview.

Each view reads its parameters, calls the runtime method the JSON API route calls (``search``,
``similar_items``, ``recommend``, ``readiness``, ``versions``) and renders a template. Bad parameters
re-render the page with the message and a 400; an unknown item is a 404 page; an outage a 503 page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, abort, current_app, redirect, render_template, request, send_file, url_for
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from recsys.errors import ArtifactError, DatabaseError, UnknownIdError, UnsupportedQueryError
from recsys.serving import browse
from recsys.serving.explain import similar_shares
from recsys.store.artifacts import list_artifacts
from services.api.common import config, runtime
from services.api.search import decode_image
from services.errors import ApiError, validation_errors
from services.schemas import RecommendationsQuery, SearchBody
from services.ui import present
from services.ui.common import guard

log = logging.getLogger(__name__)
T = TypeVar("T")

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
guard(bp)

PAGE_K = 24
FEED_K = 12
WRITE_TYPES = (("click", "click"), ("purchase", "buy"))
"""Event types the feed's buttons post (shown when configured with a positive weight), with their labels."""


AGGREGATE_TTL_S = 10.0
"""Whole-table aggregates (overview counts, the most active users, the category list) are computed at most
once per this many seconds per process, so that requests without a key cannot make the database scan the
events table over and over."""


def _engine() -> Any:
    return runtime().engine


def _aggregate(name: str, compute: Callable[[], T]) -> T:
    """``compute()``, or its value from the last ``AGGREGATE_TTL_S`` seconds (per app)."""
    cache = current_app.extensions.setdefault("recsys.ui.aggregates", {})
    lock = current_app.extensions.setdefault("recsys.ui.aggregates_lock", threading.RLock())
    with lock:  # one computation at a time per process: concurrent keyless requests wait for the cached value
        hit = cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < AGGREGATE_TTL_S:
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        cache[name] = (time.monotonic(), value)
        return value


def _render(template: str, status: int = 200, **ctx: Any) -> tuple[str, int]:
    ctx.setdefault("versions", runtime().versions())
    return render_template(f"ui/{template}", present=present, **ctx), status


@bp.get("/")
def index() -> Response:
    return redirect(url_for("ui.search"))


def _categories() -> list[str]:
    return _aggregate("categories", lambda: browse.categories(_engine()))


# ---------------------------------------------------------------------------------------------- search
def _search_form() -> dict[str, Any]:
    f = request.form if request.method == "POST" else request.args
    return {k: (f.get(k) or "").strip() for k in ("q", "category", "price_min", "price_max", "k", "user")} | {
        # a POSTed checkbox is absent when off; a GET link may leave it out (default on)
        "available_only": f.get("available_only", "" if request.method == "POST" else "on") == "on",
    }


@bp.route("/search", methods=["GET", "POST"])
def search() -> tuple[str, int]:
    form = _search_form()
    ctx: dict[str, Any] = {"form": form, "categories": _categories(), "results": None, "error": None}
    upload = request.files.get("image") if request.method == "POST" else None
    has_image = upload is not None and upload.filename != ""
    if not form["q"] and not has_image:
        return _render("search.html", **ctx)
    try:
        body = SearchBody.model_validate({
            "text": form["q"] or None, "user_id": form["user"] or None, "k": form["k"] or PAGE_K,
            "filters": {"category": form["category"] or None, "available_only": form["available_only"],
                        "price_min": form["price_min"] or None, "price_max": form["price_max"] or None},
        })
        if body.k > config().service.max_k:
            raise ApiError(400, f"k: must be at most {config().service.max_k} (service.max_k)", "k")
        image = decode_image(upload.read(), "image", config().encoders.image.max_pixels) if has_image else None
        f = body.filters
        ranked = runtime().search(text=body.text, image=image, user_id=body.user_id, k=body.k, category=f.category,
                                  available_only=f.available_only, price_min=f.price_min, price_max=f.price_max,
                                  text_weight=body.text_weight)
    except ValidationError as exc:
        return _render("search.html", 400, **ctx | {"error": validation_errors(exc, "form").message})
    except ApiError as exc:
        return _render("search.html", exc.status, **ctx | {"error": exc.message})
    except UnsupportedQueryError as exc:
        return _render("search.html", 422, **ctx | {"error": str(exc)})
    cards = browse.item_cards(_engine(), [it.id for it in ranked.items])
    ctx["results"] = present.tiles(ranked.items, cards)
    ctx["searched_image"] = upload.filename if has_image else None
    return _render("search.html", **ctx)


# ---------------------------------------------------------------------------------------------- item
@bp.get("/items/<item_id>")
def item(item_id: str) -> tuple[str, int]:
    engine = _engine()
    details = browse.item_details(engine, item_id)
    if details is None:
        raise UnknownIdError(f"unknown item id {item_id!r}")
    rt = runtime()
    similar, shares, note = [], None, None
    try:
        ranked = rt.similar_items(item_id, k=12)
        cards = browse.item_cards(engine, [it.id for it in ranked.items])
        similar = present.tiles(ranked.items, cards | {item_id: details})
        shares = similar_shares(rt, item_id, [it.id for it in ranked.items])
    except UnknownIdError:  # stored but not servable yet (no vectors, or not loaded)
        note = "This item is not in the serving snapshot yet (not embedded, or added since the last load)."
    total, users = browse.item_users(engine, item_id)
    return _render("item.html", item=details, similar=similar, shares=shares, note=note, users_total=total,
                   users=users, attributes=sorted(details.attributes.items()))


# ---------------------------------------------------------------------------------------------- user
def _feed_query() -> RecommendationsQuery:
    raw = {k: request.args[k] for k in ("diversity", "category", "max_per_category", "cursor") if request.args.get(k)}
    try:
        return RecommendationsQuery.model_validate({"k": FEED_K, **raw})
    except ValidationError as exc:
        raise validation_errors(exc, "query") from None


def _feed(user_id: str, q: RecommendationsQuery) -> dict[str, Any]:
    rt = runtime()
    try:
        feed = rt.recommend(user_id, k=q.k, category=q.category, diversity=q.diversity,
                            max_per_category=q.max_per_category, cursor=q.cursor)
    except ValueError as exc:
        raise ApiError(400, f"query.cursor: {exc}", "query.cursor") from None
    engine = _engine()
    refs = present.reason_items(feed.items)
    cards = browse.item_cards(engine, [it.id for it in feed.items] + refs)
    types = browse.user_item_types(engine, user_id, refs, dict(config().event_types))
    verbs = {i: present.VERBS.get(t, t) for i, t in types.items()}
    params = {k: v for k, v in (("diversity", q.diversity or None), ("category", q.category),
                                ("max_per_category", q.max_per_category)) if v is not None}
    return {"feed": present.tiles(feed.items, cards, verbs), "cold_start": feed.cold_start,
            "next_url": url_for("ui.user", user_id=user_id, cursor=feed.next_cursor, **params) if feed.next_cursor else None,
            "first_url": url_for("ui.user", user_id=user_id, **params) if q.cursor else None,
            "write_types": [(t, label) for t, label in WRITE_TYPES if config().event_types.get(t, 0) > 0]}


@bp.get("/users")
def users() -> Response | tuple[str, int]:
    wanted = (request.args.get("id") or "").strip()
    if wanted:
        return redirect(url_for("ui.user", user_id=wanted))
    return _render("users.html", users=_aggregate("users", lambda: browse.some_users(_engine())))


def _history(user_id: str) -> dict[str, Any]:
    engine = _engine()
    known, n_events, history = browse.user_recent_events(engine, user_id)
    cards = browse.item_cards(engine, [h.item_id for h in history])
    return {"known": known, "n_events": n_events, "history": history, "cards": cards}


@bp.get("/users/<user_id>")
def user(user_id: str) -> tuple[str, int]:
    q = _feed_query()
    args = {k: request.args[k] for k in ("diversity", "category", "max_per_category", "cursor") if request.args.get(k)}
    return _render("user.html", user_id=user_id, q=q, categories=_categories(),
                   feed_url=url_for("ui.user_feed", user_id=user_id, **args), **_history(user_id), **_feed(user_id, q))


@bp.get("/users/<user_id>/history")
def user_history(user_id: str) -> tuple[str, int]:
    """The history strip alone (swapped in after posting an event)."""
    return _render("_history.html", user_id=user_id, **_history(user_id))


@bp.get("/users/<user_id>/feed")
def user_feed(user_id: str) -> tuple[str, int]:
    """The feed section alone (the page's script swaps it in after posting an event)."""
    q = _feed_query()
    return _render("_feed.html", user_id=user_id, q=q, **_feed(user_id, q))


# ---------------------------------------------------------------------------------------------- overview
EVALUATION_DIR = "evaluation"
"""``<data_dir>/evaluation``: the newest PNG there (``recsys evaluate --plot``) is shown on the overview."""


def _evaluation_plot() -> Path | None:
    folder = Path(config().data_dir) / EVALUATION_DIR
    try:
        pngs = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()]
    except OSError:
        return None
    return max(pngs, key=lambda p: p.stat().st_mtime) if pngs else None


@bp.get("/overview")
def overview() -> tuple[str, int]:
    engine = _engine()
    ready, checks = runtime().readiness()
    active = [(a, present.metric_rows(a.metrics | ({"validation": browse.validation_scores(a.path)} if a.kind == "feed" else {})))
              for a in list_artifacts(engine) if a.active and a.kind != "catalogue"]
    plot = _evaluation_plot()
    return _render("overview.html", ov=_aggregate("overview", lambda: browse.overview(engine)), ttl=AGGREGATE_TTL_S,
                   ready=ready, checks=checks, artifacts=active,
                   plot=plot.name if plot else None, evaluation_dir=Path(config().data_dir) / EVALUATION_DIR)


@bp.get("/evaluation.png")
def evaluation_plot() -> Response:
    plot = _evaluation_plot()
    if plot is None:
        abort(404, "no evaluation plot was written (recsys evaluate --plot <data_dir>/evaluation/NAME.png)")
    return send_file(plot, mimetype="image/png", max_age=60)


# ---------------------------------------------------------------------------------------------- errors
def _error(status: int, message: str) -> tuple[str, int]:
    return render_template("ui/error.html", status=status, message=message, versions={}, present=present), status


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[str, int]:
    return _error(exc.status, exc.message)


@bp.errorhandler(UnknownIdError)
def _unknown(exc: UnknownIdError) -> tuple[str, int]:
    return _error(404, str(exc))


@bp.errorhandler(ArtifactError)
@bp.errorhandler(DatabaseError)
@bp.errorhandler(OperationalError)
def _unavailable(exc: Exception) -> tuple[str, int]:
    log.error("playground: service unavailable: %s", exc)
    return _error(503, f"the service is not available: {exc}")


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = f"the upload is too large; the limit is {current_app.config.get('MAX_CONTENT_LENGTH')} bytes"
    return _error(status, message)
