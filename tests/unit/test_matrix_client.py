"""The Matrix wrapper against a fake homeserver: rate limits honoured, errors raised, HTML escaped."""

import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from nio import AsyncClient

from bot.matrix.client import Matrix, MatrixError, client_config, notice_content, txn_id


@pytest.fixture
async def fake_hs():
    calls: list[tuple[float, str]] = []
    plan: list[tuple[int, dict]] = []

    async def send(request: web.Request) -> web.Response:
        calls.append((time.monotonic(), request.match_info["txn"]))
        status, body = plan.pop(0) if plan else (200, {"event_id": "$sent"})
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_put("/_matrix/client/{version}/rooms/{room}/send/{type}/{txn}", send)
    async with TestServer(app) as server:
        client = AsyncClient(str(server.make_url("")).rstrip("/"), "@bot:hs.test", config=client_config())
        client.restore_login("@bot:hs.test", "DEV", "token")
        yield Matrix(client), calls, plan
        await client.close()


async def test_rate_limit_is_waited_out_and_retried_with_the_same_transaction(fake_hs):
    matrix, calls, plan = fake_hs
    plan.append((429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 400}))
    event_id = await matrix.send_notice("!room:hs.test", "hello", txn="rb-1")
    assert event_id == "$sent"
    assert len(calls) == 2
    assert calls[1][0] - calls[0][0] >= 0.39  # waited as long as the server asked
    assert calls[0][1] == calls[1][1] == "rb-1"  # the retry is deduplicated by the server


async def test_error_response_raises_with_errcode(fake_hs):
    matrix, calls, plan = fake_hs
    plan.append((403, {"errcode": "M_FORBIDDEN", "error": "no"}))
    with pytest.raises(MatrixError) as caught:
        await matrix.send_notice("!room:hs.test", "hello", txn="rb-2")
    assert caught.value.errcode == "M_FORBIDDEN"


def test_notice_escapes_user_text_in_html():
    content = notice_content("<b>@room</b> & <script>", reply_to="$e")
    assert content["msgtype"] == "m.notice"
    assert content["formatted_body"] == "&lt;b&gt;@room&lt;/b&gt; &amp; &lt;script&gt;"
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$e"}}


def test_transaction_ids_are_stable_and_distinct():
    assert txn_id("reply", "$a") == txn_id("reply", "$a")
    assert txn_id("reply", "$a") != txn_id("reply", "$b") != txn_id("note", "$a")
