"""lenet5.network: parameter count, gradients vs finite differences, Gauss-Newton pass,
C vs NumPy backends step by step, C3's absent connections."""

import numpy as np
import pytest

pytest.importorskip("generated.lenet5_spec")
pytest.importorskip("generated.np_kernels")

from lenet5 import spec  # noqa: E402
from lenet5.data import load_mnist, to_input  # noqa: E402
from lenet5.network import (  # noqa: E402
    PARAM_SHAPES,
    BackendError,
    LeNet5,
    load_backend,
    parameter_count,
)
from lenet5.train import hessian_estimate  # noqa: E402


def c_available():
    try:
        load_backend("c")
    except (BackendError, ImportError):
        return False
    return True


BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.skipif(not c_available(), reason="no C"))]


@pytest.fixture(scope="module")
def digits():
    d = load_mnist("sample")
    return d.train_images[::400][:8], d.train_labels[::400][:8]  # one or two per class


def test_parameter_count_from_the_arrays():
    params = LeNet5("numpy", np.float64).init_params(np.random.default_rng(1))
    assert parameter_count(params) == 60000
    # The same count from the arrays themselves: every entry except C3's absent
    # connections (exactly zero at init; a drawn weight is 0 with probability 0).
    total = sum(a.size for a in params.values())
    absent = int((params["C3.w"] == 0).sum())
    assert absent == (96 - 60) * 25
    assert total - absent == 60000
    assert {n: a.shape for n, a in params.items()} == PARAM_SHAPES


def test_init_is_uniform_within_2_4_over_fan_in():
    params = LeNet5("numpy", np.float64).init_params(np.random.default_rng(2))
    assert np.abs(params["C1.w"]).max() <= 2.4 / 25 and np.abs(params["C1.w"]).max() > 0.09
    assert np.abs(params["C5.w"]).max() <= 2.4 / 400
    assert np.abs(params["S2.coef"]).max() <= 2.4 / 4
    c3_bound = 2.4 / (25 * spec.C3_MASK.sum(axis=1))  # 75, 100 or 150 inputs
    assert (np.abs(params["C3.b"]) <= c3_bound).all()
    wide = LeNet5("numpy", np.float64).init_params(np.random.default_rng(2), fan_in_power=0.5)
    assert 2.4 / 400 < np.abs(wide["C5.w"]).max() <= 2.4 / 20
    assert (np.abs(wide["C3.b"]) <= 2.4 / np.sqrt(25 * spec.C3_MASK.sum(axis=1))).all()
    assert (wide["C3.w"][spec.C3_MASK == 0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_matches_finite_differences(backend, digits):
    net = LeNet5(backend, np.float64)
    params = net.init_params(np.random.default_rng(3))
    x, labels = to_input(digits[0][:3], np.float64), digits[1][:3]
    _, _, grads = net.gradients(params, x, labels)

    def total_loss(p):
        return float(net.loss(net.forward(p, x)["y"], labels).sum())

    eps = 1e-6  # central differences in float64: truncation O(eps^2), rounding ~1e-16*80/eps
    for name in PARAM_SHAPES:
        g = grads[name]
        for idx in (np.unravel_index(np.argmax(np.abs(g)), g.shape), (0,) * g.ndim):
            if name == "C3.w" and not spec.C3_MASK[idx[0], idx[1]]:
                continue
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd = (total_loss(plus) - total_loss(minus)) / (2 * eps)
            assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (name, idx)
        assert np.abs(g).max() > 1e-6, name  # non-vacuous: every array gets a gradient


def test_loss_curvature_is_the_exact_second_derivative():
    net = LeNet5("numpy", np.float64)
    rng = np.random.default_rng(4)
    labels = np.array([3, 7])
    # F6 outputs near the codes, so that the softmax-like s_i is far from 0 and 1.
    x6 = net.centers[[3, 5]] * 0.8 + 0.15 * rng.standard_normal((2, 84))

    def per_sample_loss(z):
        return net.loss(net.k.rbf_forward(z, net.centers), labels)

    s = np.exp(-net.k.rbf_forward(x6, net.centers))
    assert s.max() > 1e-6  # the variance term of the curvature is exercised
    d2 = net.loss_curvature(net.k.rbf_forward(x6, net.centers), x6, labels)
    eps = 1e-4  # second differences: error O(eps^2 * E'''') + 1e-16 * E / eps^2 ~ 1e-6
    for k in (0, 17, 83):
        plus, minus = x6.copy(), x6.copy()
        plus[:, k] += eps
        minus[:, k] -= eps
        fd = (per_sample_loss(plus) - 2 * per_sample_loss(x6) + per_sample_loss(minus)) / eps**2
        np.testing.assert_allclose(d2[:, k], fd, rtol=1e-4, atol=1e-5)
    assert (d2 > 0).all()


def test_gauss_newton_diagonal(digits):
    net = LeNet5("numpy", np.float64)
    params = net.init_params(np.random.default_rng(5))
    x, labels = to_input(digits[0][:4], np.float64), digits[1][:4]
    h = net.hessian_diagonal(params, x, labels)
    for name, v in h.items():
        assert v.shape == PARAM_SHAPES[name] and (v >= 0).all(), name
        assert v.max() > 0, name
    assert (h["C3.w"][spec.C3_MASK == 0] == 0).all()
    # F6, independently: h_b = sum_n f'(a6)^2 d2E/dx6^2, h_w[o, i] = sum_n (...)[n, o] x5[n, i]^2.
    c = net.forward(params, x)
    t = np.tanh(spec.SQUASH_S * c["a6"])
    d2a6 = (spec.SQUASH_A * spec.SQUASH_S * (1 - t * t)) ** 2 * net.loss_curvature(
        c["y"], c["x6"], labels
    )
    np.testing.assert_allclose(h["F6.b"], d2a6.sum(0), rtol=1e-12)
    np.testing.assert_allclose(h["F6.w"], d2a6.T @ c["x5"] ** 2, rtol=1e-12)


@pytest.mark.skipif(not c_available(), reason="C backend unavailable")
@pytest.mark.parametrize(
    "dtype, rtol",
    # float64: both backends do the same sums in different orders, ~1e-16 per op, a few
    # thousand ops deep -> 1e-9 leaves room; float32: ~1e-7 per op, amplified over 5 steps.
    [(np.float64, 1e-9), (np.float32, 2e-3)],
)
def test_c_and_numpy_agree_step_by_step(dtype, rtol, digits):
    nets = [LeNet5(b, dtype) for b in ("numpy", "c")]
    init = nets[0].init_params(np.random.default_rng(6))
    states = [{k: v.copy() for k, v in init.items()} for _ in nets]
    x, labels = to_input(digits[0], dtype), digits[1]
    hs = [hessian_estimate(n, p, digits[0], labels) for n, p in zip(nets, states, strict=True)]
    for name in PARAM_SHAPES:
        np.testing.assert_allclose(hs[1][name], hs[0][name], rtol=rtol, atol=1e-12, err_msg=name)
    for step in range(5):
        batch = slice(step, step + 2)
        out = [n.gradients(p, x[batch], labels[batch]) for n, p in zip(nets, states, strict=True)]
        np.testing.assert_allclose(out[1][0], out[0][0], rtol=rtol)
        for name in PARAM_SHAPES:
            scale = np.abs(out[0][2][name]).max()
            np.testing.assert_allclose(
                out[1][2][name], out[0][2][name], rtol=rtol, atol=rtol * scale, err_msg=name
            )
        for n, p, o, h in zip(nets, states, out, hs, strict=True):
            n.sdlm_update(p, o[2], h, 0.0005 * 0.2)
        for name in PARAM_SHAPES:
            np.testing.assert_allclose(states[1][name], states[0][name], rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_c3_absent_connections_stay_zero(backend, digits):
    net = LeNet5(backend, np.float64)
    params = net.init_params(np.random.default_rng(7))
    before = params["C3.w"].copy()
    h = hessian_estimate(net, params, *digits)
    for i in range(4):
        x, labels = to_input(digits[0][2 * i : 2 * i + 2], np.float64), digits[1][2 * i : 2 * i + 2]
        _, _, grads = net.gradients(params, x, labels)
        assert (grads["C3.w"][spec.C3_MASK == 0] == 0).all()
        net.sdlm_update(params, grads, h, 0.0005)
    assert (params["C3.w"][spec.C3_MASK == 0] == 0).all()
    assert not np.array_equal(params["C3.w"], before)  # the present ones did move


def test_bad_inputs_name_the_argument():
    net = LeNet5("numpy", np.float64)
    params = net.init_params(np.random.default_rng(8))
    with pytest.raises(ValueError, match=r"x must be an array of shape \(N, 1, 32, 32\)"):
        net.forward(params, np.zeros((2, 1, 28, 28)))
    with pytest.raises(TypeError, match="x has dtype float32"):
        net.forward(params, np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"params\['F6.w'\] must be an array of shape"):
        net.forward({**params, "F6.w": np.zeros((84, 121))}, np.zeros((1, 1, 32, 32)))
    with pytest.raises(ValueError, match="params must have the entries"):
        net.forward({"C1.w": params["C1.w"]}, np.zeros((1, 1, 32, 32)))
    with pytest.raises(ValueError, match="backend must be one of"):
        LeNet5("fortran")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        LeNet5("numpy", np.int32)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("labels", [[-1], [10], [3, -5], [2**62], [[1]]])
def test_bad_labels_are_rejected_before_any_step(backend, labels):
    net = LeNet5(backend, np.float32)
    params = net.init_params(np.random.default_rng(8))
    hess = {n: np.ones_like(p) for n, p in params.items()}
    before = {n: p.copy() for n, p in params.items()}
    x = np.zeros((len(labels), 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"labels must be \d+ digits in 0\.\.9"):
        net.sdlm_step(params, hess, x, np.array(labels), 1e-4)
    assert all(np.array_equal(params[n], before[n]) for n in params)  # nothing moved
