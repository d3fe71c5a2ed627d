"""The backplane's lean connection (backplane_resp.py) against a real redis-server: replies,
error replies, scripts Redis has forgotten, a Redis restarted or gone between commands, a
cancelled command, a password and a database, and a server that does not speak RESP."""

from __future__ import annotations

import hashlib
import itertools
from functools import partial

import pytest
import trio

from multichat.server.backplane_address import parse_address
from multichat.server.backplane_link import answer_within
from multichat.server.backplane_resp import ReplyError, RespConnection
from redisserver import RedisServer

STEP = 10
SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
_KEYS = itertools.count()


def connect(url: str) -> RespConnection:
    return RespConnection(parse_address(url), "test-node")


def key() -> str:
    return f"resp-test:{next(_KEYS)}"


async def test_replies_come_back_as_python_values(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url)
    k = key()
    with trio.fail_after(STEP):
        assert await conn.call("PING") == "PONG"
        assert await conn.call("SET", k, "héllo") == "OK"
        assert await conn.call("GET", k) == "héllo"
        assert await conn.call("GET", k + ":none") is None
        assert await conn.call("RPUSH", k + ":list", "a", 1, 2.5) == 3
        assert await conn.call("LRANGE", k + ":list", 0, -1) == ["a", "1", "2.5"]
        await conn.aclose()


async def test_an_error_reply_raises_and_the_connection_goes_on(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url)
    with trio.fail_after(STEP):
        with pytest.raises(ReplyError, match="unknown command"):
            await conn.call("NO-SUCH-COMMAND")
        assert await conn.call("PING") == "PONG"
        await conn.aclose()


async def test_a_script_redis_forgot_is_sent_again(own_redis: RedisServer) -> None:
    conn = connect(own_redis.url)
    with trio.fail_after(STEP):
        assert await conn.call("SCRIPT", "FLUSH") == "OK"
        assert await conn.script(SHA, SCRIPT, ["k"], ["x"]) == ["k", "x", 1]
        assert await conn.call("SCRIPT", "EXISTS", SHA) == [1]
        assert await conn.script(SHA, SCRIPT, ["k"], ["y"]) == ["k", "y", 2]
        with pytest.raises(ReplyError, match="ERR"):
            await conn.script(SHA, SCRIPT, [], [])  # no KEYS[1]: a script error, not NOSCRIPT
        await conn.aclose()


async def test_a_redis_restarted_between_commands_gets_a_new_connection(
    own_redis: RedisServer,
) -> None:
    conn = connect(own_redis.url)
    with trio.fail_after(STEP):
        assert await conn.call("CLIENT", "GETNAME") == "multichat-test-node"
        await trio.to_thread.run_sync(own_redis.stop)
        with pytest.raises(OSError):
            await conn.call("PING")  # Redis away: what LINK_ERRORS expects
        await trio.to_thread.run_sync(own_redis.start)
        assert await conn.call("PING") == "PONG"
        # Restarted again with the connection open: found closed before anything is sent.
        await trio.to_thread.run_sync(own_redis.stop)
        await trio.to_thread.run_sync(own_redis.start)
        assert await conn.call("INCR", "restarts") == 1
        await conn.aclose()


async def test_a_cancelled_command_leaves_no_reply_behind(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url)
    k = key()
    with trio.fail_after(STEP):
        with trio.move_on_after(0.2):
            await conn.call("BLPOP", k, 1)  # its nil would come a second later
        assert await conn.call("RPUSH", k, "v") == 1
        assert await conn.call("LPOP", k) == "v"
        await conn.aclose()


async def test_a_command_with_no_answer_is_a_timeout(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url)
    with trio.fail_after(STEP):
        with pytest.raises(TimeoutError, match="within"):
            await answer_within(0.2, conn.call("BLPOP", key(), 5))
        assert await conn.call("PING") == "PONG"
        await conn.aclose()


async def test_a_password_and_a_database_are_used(own_redis: RedisServer) -> None:
    plain = connect(own_redis.url)
    with trio.fail_after(STEP):
        assert await plain.call("CONFIG", "SET", "requirepass", "s3cret") == "OK"
        await plain.aclose()
        port = own_redis.port
        wrong = connect(f"redis://:nope@127.0.0.1:{port}/0")
        with pytest.raises(ConnectionError, match="refused"):
            await wrong.call("PING")
        conn = connect(f"redis://:s3cret@127.0.0.1:{port}/3")
        assert await conn.call("SET", "where", "db3") == "OK"
        zero = connect(f"redis://default:s3cret@127.0.0.1:{port}/0")
        assert await zero.call("GET", "where") is None
        assert await zero.call("SELECT", 3) == "OK"
        assert await zero.call("GET", "where") == "db3"
        for c in (conn, zero):
            await c.aclose()


async def test_a_server_that_does_not_speak_resp_is_a_connection_error() -> None:
    async def http(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, http, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        conn = connect(f"redis://127.0.0.1:{port}/0")
        with trio.fail_after(STEP), pytest.raises(ConnectionError, match="not RESP"):
            await conn.call("PING")
        nursery.cancel_scope.cancel()
