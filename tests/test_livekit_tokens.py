"""The bot signs one LiveKit token per grant set and reuses it, instead of one per request; LiveKit accepts each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit import api

from dispatch_bot.bot.livekit_gateway import SignedHeaders
from tests.conftest import BotUnderTest, all_text
from tests.fakes.livekit_proxy import LiveKitProxy
from tests.fakes.livekit_server import FakeLiveKit

KEY, SECRET = "devkey", "secret"


@pytest.fixture
async def proxy(livekit: FakeLiveKit) -> AsyncIterator[LiveKitProxy]:
    front = LiveKitProxy(livekit.url)
    await front.start()
    yield front
    await front.stop()


def room_of(authorization: str) -> str:
    claims = api.TokenVerifier(KEY, SECRET).verify(authorization.removeprefix("Bearer "))
    return claims.video.room if claims.video else ""


async def test_requests_about_one_room_carry_one_token_and_another_room_gets_its_own(
    start_bot: Callable[..., Any], livekit: FakeLiveKit, proxy: LiveKitProxy
) -> None:
    bot: BotUnderTest = await start_bot(LIVEKIT_URL=proxy.url)
    livekit.add_room("room-a")
    livekit.add_room("room-b")
    for room in ("room-a", "room-a", "room-b"):
        assert f"*{room}*" in all_text(await bot.reply(f"list {room}"))

    assert proxy.seen and all(status == 200 for _, status in proxy.seen)  # LiveKit verified every token
    dispatch_lists = [auth for path, auth in proxy.authorizations if path.endswith("/ListDispatch")]
    assert [room_of(auth) for auth in dispatch_lists] == ["room-a", "room-a", "room-b"]
    assert dispatch_lists[0] == dispatch_lists[1] != dispatch_lists[2]
    assert len({auth for path, auth in proxy.authorizations if path.endswith("/ListRooms")}) == 1


def test_a_token_is_signed_again_once_its_reuse_time_is_over_and_the_oldest_grants_are_forgotten() -> None:
    service = api.LiveKitAPI("http://127.0.0.1:1", KEY, SECRET, session=object()).room  # type: ignore[arg-type]
    signed: list[str] = []

    def sign(grants: api.VideoGrants | None, sip: api.SIPGrants | None = None) -> dict[str, str]:
        signed.append(grants.room if grants else "")
        return service._auth_header(grants, sip)

    def grants(room: str) -> api.VideoGrants:
        return api.VideoGrants(room_admin=True, room=room)

    reused = SignedHeaders(sign, reuse=600.0, size=2)
    first = reused(grants("a"))
    assert reused(grants("a")) == first and signed == ["a"]
    reused(grants("b"))
    reused(grants("c"))  # three grant sets, room for two: "a" is forgotten
    reused(grants("a"))
    assert signed == ["a", "b", "c", "a"]
    assert room_of(first["authorization"]) == "a"

    expired = SignedHeaders(sign, reuse=0.0)
    signed.clear()
    expired(grants("a"))
    expired(grants("a"))
    assert signed == ["a", "a"]
