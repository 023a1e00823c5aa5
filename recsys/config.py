"""Typed, frozen configuration.

One :class:`Config` is built at start-up from ``config.yaml`` and ``RECSYS_*`` environment overrides
and then passed explicitly; library code never reads ``os.environ`` itself.

Environment overrides address one leaf key each: the upper-cased path joined by ``_`` with the prefix
``RECSYS_``. ``database.url`` is ``RECSYS_DATABASE_URL``, ``data_dir`` is ``RECSYS_DATA_DIR``,
``ingest.chunk_size`` is ``RECSYS_INGEST_CHUNK_SIZE``. Values are parsed as YAML scalars (so ``true``,
``42`` and ``[a, b]`` work) and then validated like the file. ``RECSYS_CONFIG`` names the file itself.
Unknown keys, unknown ``RECSYS_*`` variables and wrong types fail with a message naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from recsys.align.settings import AlignConfig
from recsys.cf.settings import CFConfig
from recsys.encoders.settings import EncodersConfig, ImagesConfig
from recsys.engines.settings import RayConfig
from recsys.errors import ConfigError
from recsys.experiments.settings import ExperimentConfig, ImpressionsConfig
from recsys.index.settings import IndexConfig
from recsys.search.settings import SearchConfig
from recsys.settings_base import Section as _Section

__all__ = ["AlignConfig", "CFConfig", "Config", "EncodersConfig", "IndexConfig", "RayConfig", "load_config"]

ENV_PREFIX = "RECSYS_"
# Variables with the prefix that are not config keys.
RESERVED_ENV = frozenset({"RECSYS_CONFIG", "RECSYS_TEST_POSTGRES_URL", "RECSYS_SHARED_DATA"})


class DatabaseConfig(_Section):
    url: str | None = None
    """SQLAlchemy URL. ``None``: a SQLite file ``recsys.sqlite`` under ``data_dir``."""
    echo: bool = False


class ItemMapping(_Section):
    """Which input columns hold which item field (see ``recsys ingest items --help``)."""

    id: str = "item_id"
    title: str | None = None
    text: tuple[str, ...] = ()
    category: str | None = None
    image: str | None = None
    price: str | None = None
    available: str | None = None
    attributes: tuple[str, ...] | None = None
    """Columns kept in the item's JSON attributes; ``None`` keeps every unmapped column."""


class EventMapping(_Section):
    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    event_type: str | None = None
    """Column holding the event type; when ``None`` every row gets ``default_event_type``."""
    default_event_type: str = "interaction"
    value: str | None = None
    event_id: str | None = None
    """Column with a unique event id. Without one, the idempotency key is derived from the row."""
    attributes: tuple[str, ...] | None = None


class Preset(_Section):
    items: ItemMapping = ItemMapping()
    events: EventMapping = EventMapping()


HM_ATTRIBUTES = (
    "product_type_name", "product_group_name", "graphical_appearance_name", "colour_group_name", "department_name",
    "index_group_name", "section_name", "garment_group_name",
)
"""H&M's descriptive columns, kept as attributes even where they also feed the text: search recognises their
values in queries, filters and counts them (facets)."""


class IngestConfig(_Section):
    chunk_size: int = Field(50_000, gt=0)
    presets: dict[str, Preset] = {
        "movielens": Preset(
            items=ItemMapping(id="item_id", title="title", text=("title", "genres"), category="genres", image="image"),
            events=EventMapping(
                user="user_id", item="item_id", timestamp="timestamp", value="rating", default_event_type="rating"
            ),
        ),
        "demo": Preset(
            items=ItemMapping(
                id="item_id", title="title", text=("title", "description"), category="category", image="image",
                price="price", available="available",
            ),
            events=EventMapping(
                user="user_id", item="item_id", timestamp="timestamp", event_type="event_type", value="value",
                event_id="event_id",
            ),
        ),
        "hm": Preset(
            items=ItemMapping(
                id="article_id",
                title="prod_name",
                text=("prod_name", "product_type_name", "colour_group_name", "section_name", "detail_desc"),
                category="product_type_name",
                image="image",
                attributes=HM_ATTRIBUTES,
            ),
            events=EventMapping(
                user="customer_id", item="article_id", timestamp="t_dat", default_event_type="purchase"
            ),
        ),
    }
    """Named column mappings (``recsys ingest items FILE --preset hm``); options override single fields."""


class ServiceConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    api_keys: tuple[str, ...] = ()
    read_requires_key: bool = False
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_k: int = Field(500, gt=0)
    threads: int = Field(1, ge=0)
    """BLAS and torch threads per serving process (gunicorn runs several processes; more threads per
    process than cores / processes make them spin against each other). 0 = leave the libraries' default."""
    similar_content_weight: float = Field(0.7, gt=0)
    """Share of the multimodal content cosine in the similar-items score (item page widget)."""
    similar_cf_weight: float = Field(0.3, ge=0)
    """Share of the CF co-interaction cosine (item factors) in the similar-items score; 0 = content only."""
    similar_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    """Bytes of similar-items answers kept per serving process (LRU bounded by the estimated size of keys
    and answers; 0 = no cache). Item pages ask the same questions over and over; the cache is dropped
    whenever the model, index or catalogue changes. Distinct questions cannot grow a worker beyond it."""
    experiment_models: int = Field(2, ge=0, le=8)
    """Feed model versions other than the active one that a serving process keeps loaded for experiment
    variants that name one (``model_version``); least recently used first out. A variant whose version does
    not fit is loaded again when next asked for (slow, never wrong)."""
    similar_table_k: int = Field(50, ge=0)
    """Neighbours precomputed per item with the similar-items index and saved beside it (0 = none). A widget
    call whose answer lies within them (``k`` up to this, filters keeping enough) reads a table row instead
    of searching; the table is built with the index (batched searches on all cores)."""
    upsert_wait_s: float = Field(10.0, ge=0)
    """``PUT /v1/items`` waits at most this long in all for the items' embedding (image downloads included)
    and the serving state to include them (``"servable": true``); what does not finish in time goes on in
    the background (``"servable": false``). Keep it below gunicorn's ``--timeout``."""
    embed_threads: int = Field(4, gt=0)
    """Background threads per serving process that embed upserted items, and as many that download their
    images (each download under ``encoders.image.fetch_timeout_s``), so one slow image holds up no other PUT."""
    feed_exact_max_items: int = Field(100_000, gt=0)
    """Up to this many items the home feed scores every item exactly as ``recsys evaluate`` does; above it,
    a few hundred retrieved candidates are scored (standardised over a fixed item sample)."""
    cursor_secret: str | None = Field(None, min_length=16)
    """HMAC key of feed cursors (``RECSYS_SERVICE_CURSOR_SECRET``). ``None``: a random key made with
    :mod:`secrets` on first start and kept in ``<data_dir>/cursor_secret`` (mode 0600), so every worker and
    restart shares it. Never derived from other settings: whoever knows those cannot forge cursors."""
    retry_after_s: int = Field(5, ge=1)
    """``Retry-After`` of a 503 while the database (or another dependency) is unreachable."""
    outage_log_interval_s: float = Field(60.0, gt=0)
    """An outage logs one line per failure kind per this many seconds (with the count), not a traceback
    per request."""
    idempotency_window_s: float = Field(86400.0, gt=0)
    """How long the outcome of an event batch sent with an ``Idempotency-Key`` header is kept and replayed
    to a retry with the same key."""


class TrainConfig(_Section):
    """``recsys train`` (and the hybrid row of ``recsys evaluate``)."""

    budget_s: float = Field(240.0, gt=0)
    """Seconds the per-catalogue CF tuning (:mod:`recsys.recommend.tuning`) may spend trying candidates; a step
    that would pass it is skipped (the blend selection and the final fit come on top)."""


class Config(_Section):
    data_dir: Path = Path(".recsys")
    """Holds the SQLite file and artifacts by default. Relative paths are relative to the cwd."""
    artifacts_dir: Path | None = None
    """``None``: ``<data_dir>/artifacts``."""
    event_types: dict[str, float] = {
        "view": 1.0,
        "click": 1.0,
        "add_to_cart": 4.0,
        "purchase": 8.0,
        "rating": 1.0,
        "interaction": 1.0,
    }
    """Allowed event types and their weight in the interaction matrix."""
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    encoders: EncodersConfig = EncodersConfig()
    images: ImagesConfig = ImagesConfig()
    """Which item image paths and URLs may be read (local folders, public addresses, allowlist)."""
    align: AlignConfig = AlignConfig()
    cf: CFConfig = CFConfig()
    train: TrainConfig = TrainConfig()
    index: IndexConfig = IndexConfig()
    service: ServiceConfig = ServiceConfig()
    search: SearchConfig = SearchConfig()
    ray: RayConfig = RayConfig()
    """Used by the batch commands' ``--engine ray`` only."""
    impressions: ImpressionsConfig = ImpressionsConfig()
    experiments: tuple[ExperimentConfig, ...] = ()
    """Experiments defined here (``recsys experiments create`` adds more, stored in SQL)."""

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'recsys.sqlite').as_posix()}"

    @property
    def artifacts_path(self) -> Path:
        return self.artifacts_dir if self.artifacts_dir is not None else self.data_dir / "artifacts"


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Map ``RECSYS_A_B`` names to the key path ``("a", "b")`` for every leaf of the schema."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaf_paths(ann, path))
        else:
            out[ENV_PREFIX + "_".join(path).upper()] = path
    return out


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    leaves = _leaf_paths(Config)
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var in RESERVED_ENV:
            continue
        path = leaves.get(var)
        if path is None:
            raise ConfigError(
                f"unknown environment override {var}; config keys can be overridden as "
                f"{', '.join(sorted(leaves))}"
            )
        value: Any = text
        if text.strip() in ("", "null", "~"):
            value = None
        elif text.lstrip()[:1] in ("[", "{"):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{var}: cannot parse {text!r} as a YAML list or mapping: {exc}") from exc
        # Scalars stay strings: pydantic converts "42", "true", "0.5" to the key's type or says why not.
        node = raw
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[path[-1]] = value
    return raw


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}")
        else:
            got = err.get("input")
            lines.append(f"{source}: {key}: {err['msg']} (got {got!r})")
    return "; ".join(lines)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration.

    Args:
        path: YAML file; ``None`` uses ``env["RECSYS_CONFIG"]`` if set, else ``./config.yaml`` if it
            exists, else the built-in defaults (which ``config.yaml`` in the repository mirrors).
        env: environment to take ``RECSYS_*`` overrides from (the caller passes ``os.environ``).

    Raises:
        ConfigError: unreadable file, unknown key, wrong type; the message names the key.
    """
    env = dict(env or {})
    if path is None and env.get("RECSYS_CONFIG"):
        path = env["RECSYS_CONFIG"]
    if path is None and Path("config.yaml").is_file():
        path = "config.yaml"
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        raw = loaded
    raw = _apply_env(raw, env)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None
