"""Aspect-ratio buckets and the batch order."""

from pathlib import Path

import pytest

from studio.data.buckets import fit_to_bucket, make_buckets, nearest_bucket
from studio.data.dataset import BatchPlan, Sample, epoch_batches


@pytest.mark.parametrize("resolution", [256, 512, 768, 1024])
def test_buckets_are_multiples_of_16_with_area_close_to_resolution_squared(resolution):
    buckets = make_buckets(resolution)
    assert (resolution, resolution) in buckets
    for w, h in buckets:
        assert w % 16 == 0 and h % 16 == 0
        assert 0.75 * resolution ** 2 <= w * h <= resolution ** 2
        assert max(w / h, h / w) <= 4.0
    assert set(buckets) == {(h, w) for w, h in buckets}  # portrait and landscape alike


def test_nearest_bucket_keeps_the_shape_and_fit_crops_exactly():
    buckets = make_buckets(512)
    w, h = nearest_bucket(1920, 1080, buckets)
    assert w > h and abs(w / h - 16 / 9) < 0.15
    assert nearest_bucket(1080, 1920, buckets) == (h, w)
    assert nearest_bucket(777, 777, buckets) == (512, 512)
    (new_w, new_h), box = fit_to_bucket(1920, 1080, (w, h))
    assert new_w >= w and new_h >= h and (box[2] - box[0], box[3] - box[1]) == (w, h)
    with pytest.raises(ValueError):
        make_buckets(500)


def _samples():
    buckets = [(64, 64)] * 5 + [(80, 48)] * 3
    return [Sample(i, Path(f"{i}.png"), "c", b, 64, str(i)) for i, b in enumerate(buckets)]


def test_each_batch_comes_from_one_bucket_and_epochs_cover_everything():
    samples = _samples()
    batches = epoch_batches(samples, batch_size=2, seed=1, epoch=0, repeats=2)
    assert sorted(i for b in batches for i in b) == sorted(list(range(8)) * 2)
    for batch in batches:
        assert len({samples[i].bucket for i in batch}) == 1
    assert epoch_batches(samples, 2, 1, 0, 2) == batches            # a pure function of (seed, epoch)
    assert epoch_batches(samples, 2, 1, 1, 2) != batches            # and it reshuffles per epoch


def test_ranks_split_the_batches_and_the_plan_walks_epochs():
    samples = _samples()
    rank0 = epoch_batches(samples, 1, 3, 0, rank=0, world=2)
    rank1 = epoch_batches(samples, 1, 3, 0, rank=1, world=2)
    assert len(rank0) == len(rank1) == 4
    assert sorted(i for b in rank0 + rank1 for i in b) == list(range(8))
    plan = BatchPlan(samples, 1, 3)
    first_epoch = [plan[i] for i in range(8)]
    assert plan.epoch_of(8) == 1 and plan[3] == first_epoch[3]      # random access, backwards too
