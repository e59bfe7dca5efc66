"""The progress bar moves image by image and does not count a retried shard's images twice."""

from data_engine.runtime.executor import Progress

SHARDS = [{"shard_id": "shard-000000000", "files": ["a", "b", "c"]}, {"shard_id": "shard-000000001", "files": ["d"]}]


def test_images_count_once_across_a_retry():
    p = Progress(SHARDS, enabled=False)
    p.image_done("shard-000000000", 0, 5, False)
    p.image_done("shard-000000000", 1, 0, True)
    # the worker died; the retried shard reports from the start again
    for i, masks in enumerate([5, 0, 7]):
        p.image_done("shard-000000000", i, masks, i == 1)
    p.shard_done(SHARDS[0], {"images": 3, "masks": 12, "failed": 1})
    assert (p.done, p.masks, p.failed) == (3, 12, 1)


def test_shard_without_image_events_counts_at_the_end_and_failures_fill_the_rest():
    p = Progress(SHARDS, enabled=False)
    p.shard_done(SHARDS[1], {"images": 1, "masks": 4, "failed": 0})
    p.image_done("shard-000000000", 0, 2, False)
    p.fail(SHARDS[0])
    assert (p.done, p.masks, p.failed) == (4, 6, 2)
