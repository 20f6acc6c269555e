"""The results feed (core/bus/feed.py) on a real tansu broker: a reader gets the chunks published under
its stream's request id, read back from nv.VisionLLM exactly as they were rendered, each once (a chunk
published twice around a hand-over comes once), nothing of other streams, and its iteration ends when the
stream stops running. The VLM service's caption survives the same round trip."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rtvi.core.bus.feed import ResultsFeed
from rtvi.core.bus.messages import ChunkContext, chunk_result_of
from rtvi.core.pipeline.results import ChunkResult
from rtvi.services.embed.messages import build_vision_llm as embed_message
from rtvi.services.embed.messages import read_vision_llm as read_vector
from rtvi.services.vlm.answers import Answer
from rtvi.services.vlm.messages import AnalyticsModule, Caption, CaptionTask, Place
from rtvi.services.vlm.messages import build_vision_llm as caption_message
from rtvi.services.vlm.messages import read_vision_llm as read_caption
from tests.kafka_redis import TansuBroker

T0 = 1_790_000_000.0


def context(request_id: str, index: int) -> ChunkContext:
    return ChunkContext(
        request_id=request_id,
        chunk_idx=index,
        stream_id="dock-1",
        sensor_type="Camera",
        start_ts=T0 + 2 * index,
        end_ts=T0 + 2 * index + 2,
        model_id="model-x",
        frame_count=8,
        decode_latency_s=0.0123,
        inference_latency_s=0.0456,
        chunk_latency_s=0.0789,
        queue_time_s=0.001,
    )


def test_a_reader_gets_its_streams_chunks_once_until_it_stops(broker: TansuBroker) -> None:
    topic = f"results-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    vectors = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)

    def publish(request_id: str, index: int) -> None:
        value = embed_message(context(request_id, index), vectors[index]).SerializeToString()
        producer.produce(topic, value, key=f"{request_id}:{index}".encode())
        producer.flush(10)

    async def scenario() -> tuple[list[ChunkResult[np.ndarray]], float, int]:
        feed = ResultsFeed({"bootstrap.servers": broker.bootstrap}, topic, read_vector)
        running = True
        reader = feed.subscribe("cam-a", maxsize=8, running=lambda: running, check_every_s=0.2)
        assert await asyncio.to_thread(feed.ready.wait, 30), "the feed never got its partitions"
        got: list[ChunkResult[np.ndarray]] = []
        for request_id, index in [("cam-a", 0), ("cam-b", 0), ("cam-a", 1), ("cam-a", 1), ("cam-a", 2)]:
            await asyncio.to_thread(publish, request_id, index)
        results = reader.results()
        for _ in range(3):
            got.append(await asyncio.wait_for(anext(results), 20))
        stopped = time.monotonic()
        running = False  # the stream was deleted: the reader's iteration ends
        rest = [r async for r in results]
        assert rest == []
        ended = time.monotonic() - stopped
        left = feed.readers()
        feed.close()
        return got, ended, left

    got, ended, left = asyncio.run(scenario())
    assert sorted(r.index for r in got) == [0, 1, 2]  # across partitions, in the order they arrive
    for r in got:
        assert np.array_equal(r.output, vectors[r.index])
        assert (r.start_s, r.end_s) == (T0 + 2 * r.index, T0 + 2 * r.index + 2)
        timings = (r.decode_latency_s, r.inference_latency_s, r.chunk_latency_s, r.queue_time_s)
        assert r.frame_count == 8 and timings == pytest.approx((0.0123, 0.0456, 0.0789, 0.001), abs=1e-9)
    assert ended < 2 and left == 0


def test_a_caption_survives_the_round_trip() -> None:
    task = CaptionTask(
        "Is a forklift moving?",
        "Answer yes or no.",
        Place("", "", 0, 0, 0, 0, 0),
        AnalyticsModule("", "", ""),
    )
    task = CaptionTask(task.prompt, task.system_prompt, task.place, task.module, enable_reasoning=True)
    answer = Answer("Yes, one forklift.", "It moves left.", "not JSON", True, "yes")
    caption = Caption(task, answer, input_tokens=321, output_tokens=7, error="")
    msg = caption_message(context("cam-v", 4), caption)
    back = chunk_result_of(msg, read_caption(msg))
    out = back.output
    assert (out.answer.content, out.answer.reasoning, out.answer.format_error, out.answer.alert) == (
        answer.content,
        answer.reasoning,
        answer.format_error,
        True,
    )
    assert (out.input_tokens, out.output_tokens, out.task.prompt, out.task.enable_reasoning) == (
        321,
        7,
        task.prompt,
        True,
    )
    assert back.index == 4 and back.start_s == T0 + 8 and back.inference_latency_s == pytest.approx(0.0456)
