"""Hybrid search through the service (Flask test client, real database) and the CLI: one ranking code,
the published lexical index, attribute filters and facets, items put through the API found by their words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.test_service import KEY, module_db_url, service, tiny_models  # noqa: F401 - fixtures

QUERIES = [
    {"text": "yellow tote bag"},
    {"text": "yelow tote bga", "mode": "lexical"},
    {"text": "mug", "mode": "semantic"},
    {"text": "pink notebook", "filters": {"attributes": {"colour": ["pink", "blue"]}}},
    {"text": "triangle", "filters": {"available_only": False, "category": "tote bag"}},
]


@pytest.fixture()
def cli_env(service: Any, monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Any]) -> Iterator[dict[str, str]]:  # noqa: F811
    import recsys.encoders.factory

    _client, _rt, config = service
    monkeypatch.setattr(recsys.encoders.factory, "build_text_encoder", lambda cfg, device="cpu", **kw: tiny_models["text"])
    yield {"RECSYS_CONFIG": str(Path(config.data_dir) / "config.yaml")}


def _cli_args(q: dict[str, Any]) -> list[str]:
    args = ["search", q["text"], "--k", "8", "--json"]
    if "mode" in q:
        args += ["--mode", q["mode"]]
    f = q.get("filters", {})
    for col, values in f.get("attributes", {}).items():
        args += [a for v in values for a in ("--attr", f"{col}={v}")]
    if "category" in f:
        args += ["--category", f["category"]]
    if f.get("available_only") is False:
        args.append("--include-unavailable")
    return args


def test_cli_and_api_rank_with_the_same_code(service: Any, cli_env: dict[str, str]) -> None:  # noqa: F811
    from recsys.cli import cli

    client, rt, _config = service
    rt.refresh_if_changed(every_s=0, wait=True)
    for q in QUERIES:
        api = client.post("/v1/search", json={**q, "k": 8})
        assert api.status_code == 200, api.json
        res = CliRunner().invoke(cli, _cli_args(q), env=cli_env)
        assert res.exit_code == 0, res.output
        cli_out = json.loads(res.output)
        assert [h["item_id"] for h in cli_out["hits"]] == [i["id"] for i in api.json["items"]], q
        assert [h["score"] for h in cli_out["hits"]] == pytest.approx([i["score"] for i in api.json["items"]], abs=2e-6), q
        assert cli_out["mode"] == api.json["mode"] == q.get("mode", "hybrid")
        assert api.json["items"], q


def test_search_answers_facets_filters_and_understanding(service: Any) -> None:  # noqa: F811
    client, _rt, _config = service
    r = client.post("/v1/search", json={"text": "blue mug", "k": 5, "facets": ["colour", "category", "price"]})
    assert r.status_code == 200
    body = r.json
    assert body["mode"] == "hybrid" and set(body["facets"]) == {"colour", "category", "price"}
    assert {u["phrase"] for u in body["understood"]} >= {"blue", "mug"}
    assert body["facets"]["category"].get("mug", 0) >= 1
    top = client.post("/v1/search", json={"text": "mug", "k": 3, "filters": {"attributes": {"colour": ["blue"]}}})
    assert top.status_code == 200 and top.json["items"]
    assert all(i["category"] for i in top.json["items"])
    typo = client.post("/v1/search", json={"text": "yelow", "k": 3})
    assert typo.json["corrected"] == "yellow"
    for body, status, field in [
        ({"text": "x", "filters": {"attributes": {"size": ["M"]}}}, 400, "body.filters.attributes"),
        ({"text": "x", "facets": ["brand"]}, 400, "body.facets"),
        ({"text": "x", "mode": "fuzzy"}, 400, "body.mode"),
        ({"text": "x", "facets": ["colour"] * 21}, 400, "body.facets"),
        ({"text": "x", "filters": {"attributes": {"colour": ["red"] * 101}}}, 400, "body.filters.attributes.colour"),
    ]:
        r = client.post("/v1/search", json=body)
        assert r.status_code == status and r.json["error"]["field"] == field, (body, r.json)
    spec = client.get("/openapi.json").json
    assert "SearchResponse" in spec["components"]["schemas"]
    assert "attributes" in spec["components"]["schemas"]["SearchFilters"]["properties"]


def test_the_lexical_index_is_published_and_found_again(service: Any) -> None:  # noqa: F811
    from recsys.serving import Runtime
    from recsys.store.artifacts import active_artifact

    _client, rt, config = service
    rt.refresh_if_changed(every_s=0, wait=True)
    version = rt.versions()["lexical"]
    rec = active_artifact(rt.engine, "index-lexical")
    assert version and rec is not None and rec.version == version
    assert (Path(config.artifacts_path) / "index-lexical" / version / "manifest.json").is_file()
    other = Runtime(config, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    other.reload()
    assert other.versions()["lexical"] == version  # loaded, not built again


def test_an_item_put_through_the_api_is_found_by_a_word_of_its_title(service: Any) -> None:  # noqa: F811
    client, rt, _config = service
    rt.refresh_if_changed(every_s=0, wait=True)
    before = rt.versions()["lexical"]
    assert client.post("/v1/search", json={"text": "zanzibarian", "k": 3, "mode": "lexical"}).json["items"] == []
    r = client.put("/v1/items/LEX-1", json={"title": "Zanzibarian teapot", "category": "teapot",
                                             "attributes": {"colour": "teal"}}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json["servable"] is True
    for mode in ("lexical", "hybrid"):
        hits = client.post("/v1/search", json={"text": "zanzibarian", "k": 3, "mode": mode}).json["items"]
        assert hits[0]["id"] == "LEX-1", mode
    facet = client.post("/v1/search", json={"text": "teapot", "k": 3, "facets": ["colour"],
                                            "filters": {"attributes": {"colour": ["teal"]}}}).json
    assert [i["id"] for i in facet["items"]] == ["LEX-1"] and facet["facets"]["colour"] == {"teal": 1}
    assert rt.versions()["lexical"] == before  # through the side buffer, not a rebuild
    # a price change alone reaches the price filter and facet
    r = client.put("/v1/items/LEX-1", json={"title": "Zanzibarian teapot", "category": "teapot", "price": 480.0,
                                             "attributes": {"colour": "teal"}}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json["servable"] is True
    priced = client.post("/v1/search", json={"text": "teapot", "k": 3, "facets": ["price"],
                                             "filters": {"price_min": 400}}).json
    assert [i["id"] for i in priced["items"]] == ["LEX-1"] and priced["facets"]["price"] == {"250+": 1}
    # so does a change of attributes alone (the title, hence the vectors, unchanged)
    r = client.put("/v1/items/LEX-1", json={"title": "Zanzibarian teapot", "category": "teapot", "price": 480.0,
                                             "attributes": {"colour": "ochre"}}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json["servable"] is True
    ochre = client.post("/v1/search", json={"text": "teapot", "k": 3,
                                            "filters": {"attributes": {"colour": ["ochre"]}}}).json["items"]
    assert [i["id"] for i in ochre] == ["LEX-1"]
    # a rebuild publishes a new version with the item folded in
    rt.rebuild_index()
    assert rt.versions()["lexical"] != before
    hits = client.post("/v1/search", json={"text": "zanzibarian", "k": 3, "mode": "lexical"}).json["items"]
    assert hits[0]["id"] == "LEX-1"


def test_evaluate_search_on_the_store_with_generated_queries(service: Any, cli_env: dict[str, str],  # noqa: F811
                                                             tmp_path: Path) -> None:
    from recsys.cli import cli

    _client, _rt, config = service
    items = Path(config.data_dir) / "demo" / "items.csv"
    out = tmp_path / "q.jsonl"
    res = CliRunner().invoke(cli, ["evaluate-search", "--generate", "attributes", "--items", str(items), "--columns",
                                   "colour,category,shape", "--id-column", "item_id", "--title-column", "title",
                                   "--per-type", "5", "--known-items", "5", "--out", str(out), "--json"], env=cli_env)
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    assert set(body["results"]) == {"default", "lexical", "dense", "rrf"}
    assert body["queries"] == len(out.read_text().splitlines()) > 0
    assert {"colour+category", "known-item+typo", "all"} <= set(body["results"]["default"])
    again = CliRunner().invoke(cli, ["evaluate-search", "--queries", str(out)], env=cli_env)
    assert again.exit_code == 0 and "| all |" in again.output


def test_a_large_catalogue_searches_through_the_published_search_index(service: Any) -> None:  # noqa: F811
    """Above ``search.exact_max_items`` the service builds and publishes an ``index-search`` over the catalogue's
    vectors and ranks dense candidates from it: the same answers as the exact scan here (the index of a tiny
    catalogue is exact, and the candidate path's threshold check finds the rest), and an item put through the
    API goes into the index's side buffer and is found at once."""
    from recsys.serving import Runtime
    from recsys.store.artifacts import active_artifact
    from services.app import create_app

    client, rt, config = service
    rt.refresh_if_changed(every_s=0, wait=True)
    cfg = config.model_copy(update={"search": config.search.model_copy(
        update={"exact_max_items": 5, "dense_candidates": 3, "exact_allowed_below": 0})})
    big = Runtime(cfg, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    big.reload()
    index = big._st().search.dense_index
    assert index is not None and rt._st().search.dense_index is None
    rec = active_artifact(rt.engine, "index-search")
    assert rec is not None and rec.version == big.versions()["search"]
    calls = {"n": 0}
    original = index.search

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return original(*args, **kwargs)

    index.search = counting
    app = create_app(cfg, big)
    big_client = app.test_client()
    try:
        for q in [*QUERIES, {"text": "blue mug", "mode": "semantic"}, {"text": "red star mug"},
                  {"text": "mug", "filters": {"price_max": 20}}]:
            want = client.post("/v1/search", json={**q, "k": 6}).json["items"]
            got = big_client.post("/v1/search", json={**q, "k": 6}).json["items"]
            assert [i["id"] for i in got] == [i["id"] for i in want], q
            assert [i["score"] for i in got] == pytest.approx([i["score"] for i in want], abs=1e-5), q
        assert calls["n"] >= 4
        del index.search  # (a copy of the index would copy the wrapper, bound to this one)
        r = big_client.put("/v1/items/BIG-1", json={"title": "Quasar marmot kettle", "category": "kettle"},
                           headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json["servable"] is True
        hits = big_client.post("/v1/search", json={"text": "Quasar marmot kettle", "k": 1}).json["items"]
        assert hits[0]["id"] == "BIG-1"
        rt.refresh_if_changed(every_s=0, wait=True)  # the exact runtime reads the new item too
        for q in ({"text": "Quasar marmot kettle", "mode": "semantic"}, {"text": "kettle"}, {"text": "mug"}):
            want = [i["id"] for i in client.post("/v1/search", json={**q, "k": 6}).json["items"]]
            got = [i["id"] for i in big_client.post("/v1/search", json={**q, "k": 6}).json["items"]]
            assert got == want, q
            assert q["text"] == "mug" or "BIG-1" in got, q
        assert big._st().search.dense_index.buffer_size >= 1 and big.versions()["search"] == rec.version
    finally:
        if "recsys.impressions" in app.extensions:
            app.extensions["recsys.impressions"].close()
