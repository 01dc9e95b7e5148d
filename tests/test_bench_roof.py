"""``bench/roof.py``: FLOPs per image from the generated counts, the roof as the better
of the sgemm rates it measured, the CPU description. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from generated import lenet5_spec as spec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import roof  # noqa: E402

sys.path.remove(str(ROOT))


def test_flops_per_image_shares_the_update_over_the_batch():
    image, update = spec.FLOPS_PER_IMAGE, spec.FLOPS_PER_UPDATE
    assert roof.flops_per_image("inference", 64) == image["inference"]
    train = image["forward"] + image["backward"]
    assert roof.flops_per_image("train-sdlm", 1) == train + update["sdlm"]
    assert roof.flops_per_image("train-sgd", 64) == pytest.approx(train + update["sgd"] / 64)


def test_layer_flops_split_forward_from_every_gradient():
    c1 = spec.LAYER_FLOPS["C1"]
    assert roof.layer_flops("C1", "forward") == c1["conv2d_forward"]
    backward = ("conv2d_backward_data", "conv2d_backward_filter", "conv2d_backward_bias")
    assert roof.layer_flops("C1", "backward") == sum(c1[k] for k in backward)
    assert roof.layer_flops("OUTPUT", "backward") == spec.LAYER_FLOPS["OUTPUT"]["rbf_backward"]


def test_sgemm_roof_is_the_best_rate_measured(monkeypatch):
    rates = {1: 50.0, 2: 80.0}
    fake = lambda t, sizes, seconds: {"gflops_by_size": {"8": rates[t]}, "gflops": rates[t]}  # noqa: E731
    monkeypatch.setattr(roof, "_child", fake)
    assert roof.sgemm_roof(2)["gflops"] == 80.0
    rates[2] = 5.0  # a busy machine: two threads slower than one
    measured = roof.sgemm_roof(2)
    assert measured["gflops"] == 50.0 and set(measured["by_threads"]) == {"1", "2"}
    text = roof.describe({"model": "CPU X", "cpus": 2, "avx2": True, "fma": True,
                          "avx512f": False}, measured)  # fmt: skip
    assert "CPU X" in text and "AVX512F no" in text and "50.0 GFLOP/s" in text


def test_sgemm_measures_in_a_child_with_its_thread_count():
    measured = roof.sgemm_roof(2, sizes=(32,), seconds=0.01)
    assert measured["gflops"] > 0 and measured["threads"] == 2
    assert set(measured["by_threads"]) == {"1", "2"}
    assert set(roof.cpu_info()) == {"model", "cpus", "avx2", "fma", "avx512f"}
