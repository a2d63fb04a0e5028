"""A consumer group's offsets, committed only past what the client has delivered.

Each event of a group source carries a ``delivered`` future. Resolved (every subscriber accepted the
event, or delivery gave it up by policy; with a v0.11 client, once written), its offset is settled;
per partition, the committed offset is the end of the contiguous settled prefix (``common.acks``),
never past an unsettled record. Failed (``NotDelivered``: the stream ended first), it is never
settled: the partition's commit stops before it, and the next reader of the group reads it again.

One named task sends the commits, coalesced: whatever settled since the last commit goes in the next.
When the group takes partitions away (a rebalance), what settled for them is committed first, then
they are forgotten: records of theirs still in flight are neither committed (a later settle is
ignored) nor lost (their new owner reads from the committed offset). A commit the group refuses (this
member's generation is over) is dropped, not retried, and after any failed commit a revocation
commits nothing: offsets of records read before a broker lost its log (a restart of a memory-only
broker, a topic deleted and made again) must never land in the new log, where they would skip what
is produced next. Those records are read again instead. So delivery is at least once;
duplicates (same id) are at most what was unsettled at a crash or a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiokafka.errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from common import tasks
from common.acks import Prefix
from common.kinds import SourceContext
from gateways.kafka import metrics
from gateways.kafka.connection import FAULTS, describe

COMMIT_TIMEOUT = 10.0
FENCED = (
    aiokafka.errors.CommitFailedError,
    aiokafka.errors.IllegalGenerationError,
    aiokafka.errors.UnknownMemberIdError,
    aiokafka.errors.RebalanceInProgressError,
)
"""A commit refused because this member's generation is over: its partitions go to the group again."""


class Commits(ConsumerRebalanceListener):  # type: ignore[misc]
    """The settled offsets of one group consumer's partitions, and the task that commits them."""

    def __init__(self, ctx: SourceContext, on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: dict[TopicPartition, Prefix] = {}
        """The assigned partitions: offsets handed on as events, settled or not."""
        self._due: dict[TopicPartition, int] = {}
        """Per partition, the next offset to commit (the last settled of the prefix, plus one)."""
        self._wake = asyncio.Event()
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        """A commit has failed since the last one that succeeded (the membership may be gone)."""
        self._outcomes = {o: metrics.COMMITS.labels(source=ctx.name, outcome=o) for o in ("ok", "failed")}
        self.settled = asyncio.Event()
        """Set while no event is unsettled."""
        self.settled.set()

    @property
    def unsettled(self) -> int:
        return sum(prefix.unsettled for prefix in self.partitions.values())

    def start(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self._task = tasks.start(
            self._run(), name=f"Kafka commits of event source {self.ctx.name!r}", logger=self.ctx.logger
        )

    def hold(self, tp: TopicPartition, offset: int) -> asyncio.Future[None] | None:
        """The ``delivered`` future of the record at ``offset`` of ``tp``; None when ``tp`` is no
        longer assigned (revoked mid-batch: its new owner reads the record), or when a record at or
        after ``offset`` was handed on already."""
        prefix = self.partitions.get(tp)
        if prefix is None or offset <= prefix.newest:
            return None  # revoked, or handed on already (a fetch aiokafka returns again after a skip)
        prefix.add(offset)
        self.settled.clear()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._settle(tp, prefix, offset, done))
        return future

    def _settle(self, tp: TopicPartition, prefix: Prefix, offset: int, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # not delivered: never committed past; the group reads it again
        if self.partitions.get(tp) is not prefix:
            return  # revoked meanwhile
        last = prefix.settle(offset)
        if last is not None:
            self._due[tp] = last + 1
            self._wake.set()
        if not self.unsettled:
            self.settled.set()
        self._on_change()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what is due (for ``only`` these partitions); a failure is logged, and retried with
        the next commit (the offsets stay due)."""
        due = {tp: offset for tp, offset in self._due.items() if only is None or tp in only}
        if not due or self.consumer is None:
            return
        for tp in due:
            del self._due[tp]
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT):
                await self.consumer.commit(due)
        except FENCED as exc:
            self._outcomes["failed"].inc()
            self._failing = True
            self.ctx.logger.warning(
                "Cannot commit offsets %s: %s; the group has moved on, so they are dropped (their "
                "records are read again).",
                _show(due),
                describe(exc),
            )
            return
        except FAULTS as exc:
            self._outcomes["failed"].inc()
            self._failing = True
            for tp, offset in due.items():
                if tp in self.partitions:
                    self._due[tp] = max(offset, self._due.get(tp, 0))
            self.ctx.logger.warning(
                "Cannot commit offsets %s: %s; they are committed with the next.",
                _show(due),
                describe(exc),
            )
            return
        self._failing = False
        self._outcomes["ok"].inc()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        gone = set(revoked)
        if self._failing:  # the membership may have ended with the broker that held it: no stale commit
            if stale := {tp: o for tp, o in self._due.items() if tp in gone}:
                self.ctx.logger.warning(
                    "Not committing offsets %s: commits have failed since the last one; they are read again.",
                    _show(stale),
                )
        else:
            await self.commit(gone)
        for tp in gone:
            self.partitions.pop(tp, None)
            self._due.pop(tp, None)
        if gone:
            self.ctx.logger.info("The group took partitions %s away.", _names(gone))
        if not self.unsettled:
            self.settled.set()
        self._on_change()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.partitions.setdefault(tp, Prefix())
        if assigned:
            self.ctx.logger.info("The group gave this source partitions %s.", _names(assigned))

    async def close(self) -> None:
        """Stop the task and commit what settled (before the consumer leaves the group)."""
        if self._task is not None:
            await tasks.stop(self._task, timeout=1.0, logger=self.ctx.logger, reason="source stopped")
            self._task = None
        with contextlib.suppress(*FAULTS):
            await self.commit()


def _show(due: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{offset}" for tp, offset in sorted(due.items()))


def _names(tps: set[TopicPartition] | list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))
