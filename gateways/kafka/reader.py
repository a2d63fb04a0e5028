"""Records to events, in order per partition, fetched only as fast as the stream takes them.

The reader fetches a batch (``getmany``), yields its records partition by partition, in offset order,
and fetches again: while the stream is full (its client's window is reached) it is not resumed, so it
fetches nothing. aiokafka still keeps one fetch per partition buffered ahead (at most
``MAX_PARTITION_FETCH_BYTES``); at the window (``SourceContext.max_unacked`` unsettled events) the
reader also pauses every assigned partition, so nothing more is fetched until half of them settled.
A group source's events carry ``delivered`` futures that its commits wait on (``commits``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from common.errors import SourceUnavailable
from common.events import SourceEvent, too_large
from common.kinds import SourceContext
from gateways.kafka import binding, metrics
from gateways.kafka.commits import Commits
from gateways.kafka.config import KafkaConfig
from gateways.kafka.connection import FAULTS, describe

FETCH_BATCH = 64
"""Records asked for at once: the stream's buffer (64 events)."""
FETCH_WAIT_MS = 1000
"""Milliseconds one fetch waits for a record: how long an idle source takes to notice a drain."""


class Reader:
    """The events of one source's consumer."""

    def __init__(self, ctx: SourceContext, config: KafkaConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.commits = Commits(ctx, self._settled) if config.group is not None else None
        self.consumer: AIOKafkaConsumer | None = None
        self._draining = False
        self._paused = False
        self._next: dict[TopicPartition, int] = {}
        """Per partition, the offset of the next record to hand on: where it started, then the one
        after the last handed on or skipped."""
        self._too_large = metrics.DROPPED.labels(source=ctx.name, reason="too_large")
        self._undecodable = metrics.DROPPED.labels(source=ctx.name, reason="undecodable")
        self._paused_gauge = metrics.PAUSED.labels(source=ctx.name)

    def drain(self) -> None:
        """Fetch nothing new; the source yields what it fetched and waits for it to settle."""
        self._draining = True

    async def events(self, consumer: AIOKafkaConsumer) -> AsyncGenerator[SourceEvent, None]:
        self.consumer = consumer
        if self.commits is not None:
            self.commits.start(consumer)
        skipped: dict[TopicPartition, tuple[int, UnicodeDecodeError]] = {}
        while not self._draining:
            try:
                for tp in consumer.assignment() - self._next.keys():  # once per partition it gets
                    self._next[tp] = await consumer.position(tp)
                batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=FETCH_BATCH)
            except UnicodeDecodeError:  # aiokafka decodes header names as UTF-8; Kafka does not ask it
                batch, skipped = await self._around_undecodable(consumer)
            except FAULTS as exc:
                raise SourceUnavailable(
                    f"fetching from Kafka failed: {describe(exc)}", source=self.ctx.name
                ) from exc
            for tp, records in batch.items():
                for record in records:
                    self._next[tp] = record.offset + 1
                    event = self._event(tp, record)
                    if event is not None:
                        yield event
                        self._pace()
                if tp in skipped:  # after the records before it, so the commit prefix stays in order
                    self._skip_undecodable(tp, *skipped[tp])
            skipped = {}
        if self.commits is not None:
            await self.commits.settled.wait()

    async def _around_undecodable(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[
        dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        dict[TopicPartition, tuple[int, UnicodeDecodeError]],
    ]:
        """A fetch held a record aiokafka cannot decode (a header name that is not UTF-8): read each
        partition's records one at a time up to it, skip it (logged, counted, and committed past, as a
        record too large is), and go on. The fetch is lost whole, but the position is not, so every
        record before the bad one is read again here."""
        found: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        skipped: dict[TopicPartition, tuple[int, UnicodeDecodeError]] = {}
        for tp in sorted(consumer.assignment()):
            # The failed fetch may have consumed records it never returned: back to the first not
            # handed on (the position each partition started at, before anything was).
            start = self._next.get(tp)
            if start is not None:
                consumer.seek(tp, start)
            records: list[ConsumerRecord[bytes, bytes]] = []
            while len(records) < FETCH_BATCH:
                try:
                    one = await consumer.getmany(tp, timeout_ms=FETCH_WAIT_MS, max_records=1)
                except UnicodeDecodeError as exc:
                    offset = await consumer.position(tp)
                    skipped[tp] = (offset, exc)
                    consumer.seek(tp, offset + 1)
                    break
                if not one.get(tp):
                    break
                records += one[tp]
            if records or tp in skipped:
                found[tp] = records
        return found, skipped

    def _skip_undecodable(self, tp: TopicPartition, offset: int, exc: UnicodeDecodeError) -> None:
        self._undecodable.inc()
        self.ctx.logger.warning(
            "Record %s/%d/%d cannot be decoded (%s: a header name that is not UTF-8); skipped%s.",
            tp.topic,
            tp.partition,
            offset,
            exc.reason,
            ", and the group's offset moves past it" if self.commits is not None else "",
        )
        self._next[tp] = offset + 1
        if self.commits is not None:
            future = self.commits.hold(tp, offset)
            if future is not None:
                future.set_result(None)

    def _event(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> SourceEvent | None:
        headers = tuple((name, bytes(value or b"")) for name, value in (record.headers or ()))
        event = binding.to_event(
            binding.KafkaRecord(
                tp.topic, tp.partition, record.offset, record.value, record.key, record.timestamp, headers
            )
        )
        commits = self.commits
        if too_large(event):
            self._too_large.inc()
            self.ctx.logger.warning(
                "Record %s (%d bytes) is too large for one event; skipped%s.",
                event.id,
                len(record.value or b""),
                ", and the group's offset moves past it" if commits is not None else "",
            )
            if commits is not None:
                future = commits.hold(tp, record.offset)
                if future is not None:
                    future.set_result(None)
            return None
        if commits is None:
            return event
        delivered = commits.hold(tp, record.offset)
        if delivered is None:
            return None  # the partition was revoked mid-batch: its new owner reads this record
        return dataclasses.replace(event, delivered=delivered)

    def _pace(self) -> None:
        """Pause every assigned partition at the window."""
        limit = self.ctx.max_unacked
        if self._paused or self.commits is None or not limit or self.consumer is None:
            return
        if self.commits.unsettled >= limit:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            self._paused_gauge.set(1)

    def _settled(self) -> None:
        """Resume fetching once half the window has settled."""
        if not self._paused or self.commits is None or self.consumer is None:
            return
        if self.commits.unsettled <= self.ctx.max_unacked // 2:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
            self._paused_gauge.set(0)

    async def close(self) -> None:
        """Commit what settled (the consumer is still a member of its group)."""
        self._paused_gauge.set(0)
        if self.commits is not None:
            await self.commits.close()
