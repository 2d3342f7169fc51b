"""``create_app`` under a runner other than the CLI's (aiohttp's test server, with its defaults):
the app owns the server settings it depends on, so compressed bodies are read by the relay's own
capped decoder, and every row of the ingress table answers on its path and methods."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
from aiohttp.test_utils import TestClient
from aiohttp.web import Application, Request, Response
from pytest_aiohttp import AiohttpClient

from receiver.ingest import INGRESS
from schemas.llm_event import SourceFormat
from service.app import create_app
from service.config import load_config
from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.waiting import eventually


async def client_for(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> TestClient[Request, Application]:
    config = load_config({"RELAY_DATA_DIR": str(tmp_path), "RELAY_SINKS": "file"})
    return await aiohttp_client(create_app(config))


async def test_a_gzip_body_is_accepted_under_any_runner(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await client_for(tmp_path, aiohttp_client)
    body = otlp_json_spans(3)
    answer = await client.post(
        "/v1/traces",
        data=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 200, await answer.text()
    events_file = tmp_path / "llm-events.jsonl"

    def delivered() -> list[str] | None:
        if not events_file.exists():
            return None
        lines = events_file.read_bytes().splitlines()
        return [orjson.loads(line)["span_id"] for line in lines] if len(lines) >= 3 else None

    assert sorted(await eventually(delivered, message="three events in the file")) == sorted(
        span_ids(body)
    )


async def test_a_gzip_bomb_is_refused_by_the_size_cap(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await client_for(tmp_path, aiohttp_client)
    bomb = gzip.compress(b"{" + b" " * (21 * 1024 * 1024) + b"}")  # over the 20 MiB default cap
    answer = await client.post(
        "/v1/traces",
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 413
    # Refused by the relay's own capped decoder, not after aiohttp inflated the whole body.
    assert "after decompression" in (await answer.json())["message"]


def test_every_input_format_has_one_row() -> None:
    formats = [source.format for row in INGRESS for source in dict.fromkeys(row.inputs.values())]
    assert sorted(formats) == sorted(SourceFormat.__args__)  # type: ignore[attr-defined]


async def test_every_row_answers_on_its_path_and_methods(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await client_for(tmp_path, aiohttp_client)
    for row in INGRESS:
        for method in row.methods:
            answer = await client.request(
                method, row.path, data=b"[]", headers={"Content-Type": "application/json"}
            )
            # An empty batch is read (200) or refused as unusable (400): the route exists.
            assert answer.status in (200, 400), (method, row.path, answer.status)
        answer = await client.get(row.path)
        assert answer.status == 405, row.path


async def test_an_unexpected_error_is_a_counted_json_500(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """A bug in a handler: the caller gets a clean JSON 500 (never the error's text, which may
    quote what was sent), and the answer is counted like any other."""
    config = load_config({"RELAY_DATA_DIR": str(tmp_path), "RELAY_SINKS": "file"})
    app = create_app(config)

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret-looking detail sk-live-000")

    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    answer = await client.get("/broken")
    assert answer.status == 500
    body = await answer.text()
    assert orjson.loads(body) == {"error": "internal error"}
    assert "sk-live" not in body
    metrics = await (await client.get("/metrics")).text()
    assert 'relay_http_requests_total{route="/broken",status="500"} 1.0' in metrics
