"""The epoch sampler: pools, quotas, fair acceptance, relabelled-positive copies, the config file."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from hpasc.core.errors import InputError
from hpasc.labels.folders import LabelSet
from hpasc.stages.train.sampling import EpochSampler, SamplingConfig, read_sampling_config
from hpasc.stages.train.targets import build_targets

ALL = list(range(19))


def make_config(weights: dict[int, float] | None = None, copies: dict[int, int] | None = None,
                **settings: float) -> SamplingConfig:
    """The packaged config with the given classes' weights and copies replaced."""
    config = read_sampling_config()
    class_weights = list(config.class_weights)
    positive_copies = list(config.positive_copies)
    for c, w in (weights or {}).items():
        class_weights[c] = w
    for c, n in (copies or {}).items():
        positive_copies[c] = n
    return dataclasses.replace(config, class_weights=tuple(class_weights),
                               positive_copies=tuple(positive_copies), **settings)


def make_sampler(image_labels: Sequence[Sequence[int]], outputs: Sequence[int],
                 overrides: LabelSet | None = None, config: SamplingConfig | None = None,
                 epoch_size: int = 100, seed: int = 0) -> EpochSampler:
    cell_ids = [f"cell_{i}" for i in range(len(image_labels))]
    targets = build_targets(cell_ids, image_labels, outputs, overrides or {})
    return EpochSampler(image_labels, targets.values, targets.relabelled, outputs, config=config,
                        epoch_size=epoch_size, seed=seed)


def test_quotas_follow_weights_over_non_empty_pools_and_sum_exactly() -> None:
    config = make_config({0: 2, 1: 1, 2: 5, 18: 3})
    labels = [[0], [1], [0, 1]]  # no cell of class 2, no negative cell
    for epoch_size, expected in [(30, {0: 20, 1: 10}), (31, {0: 21, 1: 10}), (1, {0: 1, 1: 0})]:
        sampler = make_sampler(labels, [0, 1, 2, 18], config=config, epoch_size=epoch_size)
        assert sampler.quotas() == {**expected, 2: 0, 18: 0}
        assert len(sampler.sample(0)) == epoch_size
    assert make_sampler(labels, [0, 1, 2, 18], config=config).pool(1).tolist() == [1, 2]
    with pytest.raises(InputError, match="weight 0"):
        make_sampler(labels, [0, 1], config=make_config({0: 0, 1: 0}))


def test_default_quotas_reproduce_the_4th_place_shares() -> None:
    labels = [[c] for c in range(19)]
    quotas = make_sampler(labels, ALL, epoch_size=95).quotas()  # weights sum to 95/6
    assert quotas == {0: 12, 1: 3, 2: 6, 3: 3, 4: 3, 5: 6, 6: 3, 7: 6, 8: 3, 9: 3, 10: 3, 11: 2, 12: 3,
                      13: 6, 14: 6, 15: 3, 16: 12, 17: 6, 18: 6}


def test_a_small_pool_is_cycled_whole_passes_at_a_time() -> None:
    cells = make_sampler([[0]] * 3, [0], epoch_size=30).sample(0)
    assert cells.dtype == np.int64
    assert np.bincount(cells).tolist() == [10, 10, 10]
    assert cells.tolist() != sorted(cells.tolist())


@pytest.mark.parametrize("exponent, ratio", [(0.5, 0.5), (1.0, 0.25), (0.0, 1.0)])
def test_fair_acceptance_draws_multi_label_cells_less(exponent: float, ratio: float) -> None:
    labels = [[0]] * 100 + [[0, 1, 2, 3]] * 100
    sampler = make_sampler(labels, [0], config=make_config(fair_exponent=exponent), epoch_size=20_000, seed=7)
    counts = np.bincount(sampler.sample(0), minlength=200)
    assert counts[100:].mean() / counts[:100].mean() == pytest.approx(ratio, abs=0.03)


def test_relabelled_positives_get_extra_copies_but_weak_positives_do_not() -> None:
    labels = [[0]] * 102
    overrides = {0: {"cell_100": 1.0, "cell_101": 0.2}}  # 0.2 is below the positive threshold
    sampler = make_sampler(labels, [0], overrides, config=make_config(copies={0: 3}), epoch_size=21_000)
    assert np.bincount(sampler.pool(0)).tolist() == [1] * 100 + [4, 1]
    counts = np.bincount(sampler.sample(0))  # 105 entries, all accepted: exactly 200 passes
    assert counts.tolist() == [200] * 100 + [800, 200]


def test_pseudo_mined_positives_join_the_pool_of_their_class() -> None:
    labels = [[11], [18], [18], [0]]
    overrides = {11: {"cell_0": 1.0, "cell_1": 0.99}, 12: {"cell_2": 0.9}, 0: {"cell_2": 0.5}}
    sampler = make_sampler(labels, ALL, overrides)
    assert np.bincount(sampler.pool(11)).tolist() == [41, 41]  # 1 + 40 copies
    assert np.bincount(sampler.pool(12)).tolist() == [0, 0, 3]  # 1 + 2 copies
    assert sampler.pool(0).tolist() == [3]  # 0.5 is no positive
    assert sampler.pool(18).tolist() == [1, 2]  # still negatives by their image labels


def test_negatives_are_cells_with_none_of_the_trained_classes() -> None:
    sampler = make_sampler([[11], [0], [18], [], [0, 11]], [11])
    assert sampler.pool(11).tolist() == [0, 4]
    assert sampler.pool(18).tolist() == [1, 2, 3]


def test_samples_depend_on_seed_and_epoch_only() -> None:
    labels = [[c % 19] for c in range(500)]
    first, second = make_sampler(labels, ALL, seed=3), make_sampler(labels, ALL, seed=3)
    epoch_five = first.sample(5)
    second.sample(4)
    np.testing.assert_array_equal(second.sample(5), epoch_five)
    assert not np.array_equal(first.sample(6), epoch_five)
    assert not np.array_equal(make_sampler(labels, ALL, seed=4).sample(5), epoch_five)


def test_sampling_500k_cells_is_fast() -> None:
    labels = [[i % 19] for i in range(400_000)] + [[i % 18, (i + 5) % 18] for i in range(100_000)]
    sampler = make_sampler(labels, ALL, {11: {"cell_7": 1.0}}, epoch_size=20_000)
    start = time.perf_counter()
    cells = sampler.sample(0)
    assert time.perf_counter() - start < 0.5
    assert len(cells) == 20_000 and cells.max() < 500_000


def test_packaged_config_has_the_4th_place_values() -> None:
    config = read_sampling_config()
    half = [1, 3, 4, 6, 8, 9, 10, 12, 15]
    assert [config.class_weights[c] for c in half] == [0.5] * 9
    assert [config.class_weights[c] for c in (0, 16)] == [2, 2]
    assert [config.class_weights[c] for c in (2, 5, 7, 13, 14, 17, 18)] == [1] * 7
    assert config.class_weights[11] == pytest.approx(1 / 3)
    assert config.positive_copies == tuple(40 if c == 11 else 2 if c == 12 else 1 for c in range(19))
    assert (config.positive_threshold, config.fair_exponent) == (0.9, 0.5)


def test_a_config_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "sampling.yaml"
    path.write_text("class_weights: {11: 0.5, '3': 4}\n"
                    "positive_copies: {default: 2, 12: 5}\nfair_exponent: 1\n")
    config = read_sampling_config(path)
    default = read_sampling_config()
    assert config.class_weights == tuple(0.5 if c == 11 else 4 if c == 3 else w
                                         for c, w in enumerate(default.class_weights))
    assert config.positive_copies == tuple(5 if c == 12 else 2 for c in range(19))
    assert (config.positive_threshold, config.fair_exponent) == (0.9, 1.0)
    path.write_text("")
    assert read_sampling_config(path) == default


@pytest.mark.parametrize("text, problem", [
    ("class_weight: {0: 1}\n", "unknown key(s) class_weight"),
    ("class_weights: {0: -1}\n", "class_weights 0: -1"),
    ("class_weights: {19: 1}\n", "19 is not a class index"),
    ("class_weights: {x: 1}\n", "'x' is not a class index"),
    ("class_weights: {0: many}\n", "'many'"),
    ("class_weights: [1, 2]\n", "class_weights: expected a mapping"),
    ("class_weights: {" + ", ".join(f"{c}: 0" for c in range(19)) + "}\n", "all 0"),
    ("positive_copies: {11: -1}\n", "positive_copies 11: -1"),
    ("positive_copies: {default: 1.5}\n", "positive_copies default: 1.5"),
    ("positive_threshold: 1.5\n", "positive_threshold"),
    ("fair_exponent: -1\n", "fair_exponent"),
    ("- 1\n", "expected a mapping"),
    ("fair_exponent: 1\nclass_weights: {0: [\n", "not valid YAML"),
])
def test_bad_config_files_are_input_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sampling.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=f"^{path}") as error:
        read_sampling_config(path)
    assert problem in str(error.value)
    with pytest.raises(InputError, match="does not exist"):
        read_sampling_config(tmp_path / "missing.yaml")
