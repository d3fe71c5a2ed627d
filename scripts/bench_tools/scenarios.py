"""The benchmark's scenarios: the issue's load shapes, their quick versions, and their targets.

Each runs once per mode (see MODES) against a fresh server:
  burst   50 members, 5 send 2,000 messages each as fast as the server accepts them
  paced   the same room paced at 245,000 deliveries/s: the server's CPU
  steady  100 members each sending one message a second: latency
  join    5,000 members join, each seeing every other one: time and memory per connection
  slow    one member never reads while the rest get 76,000 deliveries/s: their latency, the
          stalled member dropped, the server's memory bounded
  slow1k  issue 17's non-reader room: 20 members, 4 senders x 250 messages/s of 400 bytes
  slow4k  the same at 4 x 1,000 messages/s, past the "busy room" rate
Each also runs against the C reference server (reference.c, mode "ref"), round by round with
the modes, and every multichat row is judged as a ratio to it (issue 17).
`--quick` scales every count down, to prove the harness works in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The length of every message's text: a line of chat.
TEXT_LEN = 64
# Issue 17's non-reader scenarios send paragraphs rather than lines.
LONG_TEXT_LEN = 400
# How members talk to the server, all on its one port: multichat/1 JSON lines over TCP, the
# plain-text dialect, and multichat/1 over WebSocket (one JSON object per text message).
MODES = ("json", "text", "ws")
# `--mode` also takes a group: "all" is the default; "both" is what it meant before ws.
MODE_GROUPS = {"all": MODES, "both": ("json", "text")}
# ws carries the same JSON as json, framed; it may cost at most a fifth of JSON's burst rate.
WS_VS_JSON_TARGET = 0.80
# Issue 14: with a data directory, burst keeps 90% of the in-memory rate, steady's p99 within
# 1.5x of it, in the same run.
HISTORY_BURST_TARGET = 0.90
HISTORY_P99_TARGET = 1.5
# Issue 16, two servers and Redis against one server at the same paced load: the servers' CPU
# per delivery summed at most 1.3x one server's, and a message that crosses servers reaches its
# members with a p99 at most 2x one server's steady p99.
BACKPLANE_CPU_TARGET = 1.3
BACKPLANE_P99_TARGET = 2.0
# The server's memory "stays bounded" while a member never reads if it grows by less than this.
BOUNDED_RSS_GROWTH_KIB = 32 * 1024
# The C reference server's label in the reports; `--no-ref` leaves it out.
REF_MODE = "ref"
# The reference speaks only the plain-text dialect, so loadgen drives it as it drives `text`.
REF_DIALECT = "text"
# Issue 17: burst delivers at least half the reference's deliveries/s in the same run.
REF_BURST_TARGET = 0.5
# Issue 17: steady's p99 and the non-reader scenarios' p99 at most 1.5x the reference's.
REF_P99_TARGET = 1.5
# Issue 17: 5,000 members join no slower than they join the reference.
REF_JOIN_TIME_TARGET = 1.0
# Issue 17: at most 5 KiB of server memory per joined member, absolute (its reference had 2.8).
REF_KIB_PER_CONNECTION_TARGET = 5.0


@dataclass(frozen=True)
class Scenario:
    """One load shape; `rate` is messages a second per sender, 0 for as fast as accepted."""

    name: str
    members: int
    senders: int
    per_sender: int
    rate: float = 0.0
    stalled: bool = False
    rounds: int = 1
    window: int = 256  # handshakes in flight per generator process
    deadline: float = 60.0  # seconds for one run, joining included
    idle: float = 10.0  # seconds without progress before a run gives up
    procs: int = 2
    text_len: int = TEXT_LEN  # characters of every message's text

    @property
    def kind(self) -> str:
        if self.name == "join":
            return "join"
        return "burst" if self.rate == 0 else "rate"

    @property
    def duration(self) -> float:
        return self.per_sender / self.rate if self.rate else 0.0


def full_scenarios() -> list[Scenario]:
    return [
        Scenario("burst", members=50, senders=5, per_sender=2_000, rounds=5),
        # 245,000 deliveries/s among 50 members: 4,900 messages/s, 980 from each sender.
        Scenario("paced", members=50, senders=5, per_sender=9_800, rate=980.0),
        Scenario("steady", members=100, senders=100, per_sender=30, rate=1.0),
        Scenario("join", members=5_000, senders=0, per_sender=0, deadline=120.0, idle=30.0),
        # 76,000 deliveries/s to the 49 that read: 1,551 messages/s, 310 from each sender.
        Scenario("slow", members=50, senders=5, per_sender=6_200, rate=310.2, stalled=True),
        # Issue 17's non-reader room, 10 s each: 1,000 and 4,000 messages/s of 400 bytes.
        Scenario(
            "slow1k",
            members=20,
            senders=4,
            per_sender=2_500,
            rate=250.0,
            stalled=True,
            text_len=LONG_TEXT_LEN,
        ),
        Scenario(
            "slow4k",
            members=20,
            senders=4,
            per_sender=10_000,
            rate=1_000.0,
            stalled=True,
            text_len=LONG_TEXT_LEN,
        ),
    ]


def quick_scenarios() -> list[Scenario]:
    return [
        Scenario("burst", members=20, senders=3, per_sender=200, rounds=1, deadline=20.0),
        Scenario("paced", members=20, senders=3, per_sender=500, rate=500.0, deadline=20.0),
        Scenario("steady", members=40, senders=40, per_sender=2, rate=1.0, deadline=20.0),
        Scenario("join", members=200, senders=0, per_sender=0, deadline=20.0),
        # Fast enough that the member that never reads passes its limit within the run.
        Scenario("slow", members=20, senders=3, per_sender=1_600, rate=800.0, stalled=True),
        # Long enough that the member that never reads is dropped well before the end (here,
        # by both servers: after about 0.8 s of slow1k's 2 s, 0.6 s of slow4k's 1.5 s).
        Scenario(
            "slow1k",
            members=10,
            senders=4,
            per_sender=500,
            rate=250.0,
            stalled=True,
            text_len=LONG_TEXT_LEN,
        ),
        Scenario(
            "slow4k",
            members=10,
            senders=4,
            per_sender=1_500,
            rate=1_000.0,
            stalled=True,
            text_len=LONG_TEXT_LEN,
        ),
    ]


def paced_at(scenarios: list[Scenario], per_second: float) -> list[Scenario]:
    """`scenarios` with paced at `per_second` messages a second (its senders together) for as
    long as before: how a cost changes with the load (the backplane's lingering, say)."""
    return [
        replace(
            s, rate=per_second / s.senders, per_sender=round(s.duration * per_second / s.senders)
        )
        if s.name == "paced"
        else s
        for s in scenarios
    ]


TARGETS = {
    "burst": "> 1.83M deliveries/s, nothing lost, duplicated, reordered, merged or split",
    "paced": "<= 0.5 of a core at 245k deliveries/s",
    "steady": "p99 < 3 ms",
    "join": "< 10 s and < 8 KiB RSS per connection",
    "slow": "stalled member dropped, others' p99 < 3 ms, server memory bounded",
    "slow1k": "stalled member dropped, others' p99 < 3 ms, server memory bounded",
    "slow4k": "stalled member dropped, others' p99 < 3 ms, server memory bounded",
}
