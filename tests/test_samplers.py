"""helpers.data.samplers: the positive share per stretch of iterations follows the schedule, in one process and
split over two ranks (simulated by constructing the sampler with rank / world_size)."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from helpers.core.paths import DEMO_CONFIG
from helpers.data.samplers import PositiveRateSampler, positive_flags, scheduled_share

BATCH = 8
ITERS = 600
STRETCH = 100


@pytest.fixture(scope="module")
def train_dataset(demo_prepared):
    from mmseg.registry import DATASETS

    import helpers.modeling  # noqa: F401  (registration)

    return DATASETS.build(
        dict(
            type="PneumothoraxDataset",
            data_root=str(demo_prepared.out_dir),
            ann_file="train.txt",
            data_prefix=dict(img_path="images/", seg_map_path="masks/"),
            pipeline=[],
        )
    )


def test_positive_flags_follow_labels_csv(train_dataset, demo_prepared):
    labels = demo_prepared.labels.set_index("name")
    flags = positive_flags(train_dataset)
    for i in range(len(train_dataset)):
        name = train_dataset.get_data_info(i)["img_path"].rsplit("/", 1)[-1].removesuffix(".png")
        assert flags[i] == (labels.loc[name, "fg_pixels"] > 0)
    assert 0 < flags.sum() < len(flags)


def _draws(sampler: PositiveRateSampler, iterations: int) -> np.ndarray:
    return np.fromiter(islice(iter(sampler), iterations * sampler.batch_size), dtype=np.int64)


@pytest.mark.parametrize("world_size", [1, 2])
def test_share_per_stretch_follows_the_schedule(train_dataset, world_size):
    flags = positive_flags(train_dataset)
    iterations = ITERS + 2 * STRETCH  # past the schedule's end too: it stays at `end`
    per_rank = [
        _draws(
            PositiveRateSampler(
                train_dataset,
                start=0.8,
                end=0.2,
                iters=ITERS,
                batch_size=BATCH,
                seed=3,
                rank=rank,
                world_size=world_size,
            ),
            iterations,
        )
        for rank in range(world_size)
    ]
    positive = np.stack([flags[d].reshape(iterations, BATCH) for d in per_rank])  # (rank, iteration, sample)
    for begin in range(0, iterations, STRETCH):
        expected = scheduled_share(np.arange(begin, begin + STRETCH), 0.8, 0.2, ITERS).mean()
        n = STRETCH * BATCH * world_size
        tolerance = 4 * np.sqrt(expected * (1 - expected) / n) + 0.01  # 4 binomial standard deviations
        observed = positive[:, begin : begin + STRETCH].mean()
        assert abs(observed - expected) < tolerance, (begin, observed, expected)
        for rank in range(world_size):  # every rank alone follows it too (with its smaller sample)
            alone = positive[rank, begin : begin + STRETCH].mean()
            assert abs(alone - expected) < tolerance * np.sqrt(world_size), (rank, begin, alone, expected)
    assert positive[:, :STRETCH].mean() > positive[:, ITERS - STRETCH : ITERS].mean() + 0.3


def test_ranks_split_one_global_stream_and_repeat_by_seed(train_dataset):
    make = lambda **kw: PositiveRateSampler(train_dataset, start=0.7, end=0.3, iters=50, **kw)  # noqa: E731
    single = _draws(make(batch_size=2 * BATCH, seed=5, rank=0, world_size=1), 60)
    ranks = [_draws(make(batch_size=BATCH, seed=5, rank=r, world_size=2), 60) for r in (0, 1)]
    # the global draw g goes to rank g % 2: interleaving the two ranks gives the one-process stream of
    # the same global batch, so the ranks' draws are disjoint slices of it
    interleaved = np.empty_like(single)
    interleaved[0::2], interleaved[1::2] = ranks
    assert np.array_equal(interleaved, single)
    assert not np.array_equal(ranks[0], ranks[1])
    assert np.array_equal(_draws(make(batch_size=BATCH, seed=5, rank=1, world_size=2), 60), ranks[1])
    assert not np.array_equal(_draws(make(batch_size=BATCH, seed=6, rank=1, world_size=2), 60), ranks[1])


def test_bad_arguments_are_refused(train_dataset):
    with pytest.raises(ValueError, match="shares"):
        PositiveRateSampler(train_dataset, start=1.5, end=0.4, iters=10, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="iters and batch_size"):
        PositiveRateSampler(train_dataset, start=0.8, end=0.4, seed=0)
    with pytest.raises(ValueError, match="rank"):
        PositiveRateSampler(train_dataset, iters=10, batch_size=2, seed=0, rank=2, world_size=2)


def test_positive_rate_parameter_builds_the_sampler_into_the_train_loader(demo_prepared, tmp_path):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from helpers.modeling.train import TrainParams, build_config

    params = TrainParams(
        config=DEMO_CONFIG,
        prepared_root=str(demo_prepared.out_dir),
        img_size=64,
        batch_size=4,
        max_iters=40,
        workers=0,
        work_dir=str(tmp_path),
        positive_rate=[0.9, 0.1],
    )
    cfg = build_config(params)
    init_default_scope("mmseg")
    assert cfg.train_dataloader.dataset.get("positive_repeats", 1) == 1
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    sampler = loader.sampler
    assert isinstance(sampler, PositiveRateSampler)
    assert (sampler.start, sampler.end, sampler.iters, sampler.batch_size) == (0.9, 0.1, 40, 4)
    assert (sampler.rank, sampler.world_size) == (0, 1)
    batch = next(iter(loader))
    assert len(batch["inputs"]) == 4
