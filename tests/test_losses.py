"""KTO and KTO-S as pure functions: hand-computed values, gradient flow, gradient-weight properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ktos.losses import gradient_weight, kto_loss

BETA = 0.2


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def one_example(r: float, z0: float, desirable: bool, sign_correction: bool, dw=1.0, uw=1.0):
    """The loss of a single example with reward r in a batch whose KL reference point is z0."""
    empty = torch.zeros(0, dtype=torch.float64)
    logp = torch.tensor([r], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    kl_policy, kl_ref = torch.tensor([z0, z0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    chosen = (logp, zero) if desirable else (empty, empty)
    rejected = (empty, empty) if desirable else (logp, zero)
    losses, cr, rr, kl = kto_loss(
        chosen[0],
        rejected[0],
        kl_policy,
        chosen[1],
        rejected[1],
        kl_ref,
        beta=BETA,
        desirable_weight=dw,
        undesirable_weight=uw,
        sign_correction=sign_correction,
    )
    assert kl.item() == pytest.approx(max(z0, 0.0))
    return losses.item()


@pytest.mark.parametrize("r", [2.5, -1.5, 0.0])
@pytest.mark.parametrize("z0", [0.0, 0.8])
def test_kto_s_matches_hand_computed_values(r: float, z0: float) -> None:
    sign = (r > 0) - (r < 0)
    assert one_example(r, z0, True, True) == pytest.approx(1 - sigmoid(BETA * (r + sign * z0)))
    assert one_example(r, z0, False, True) == pytest.approx(1 - sigmoid(-BETA * (r + sign * z0)))
    # plain KTO for contrast: reference point z0 whatever the sign of r
    assert one_example(r, z0, True, False) == pytest.approx(1 - sigmoid(BETA * (r - z0)))
    assert one_example(r, z0, False, False) == pytest.approx(1 - sigmoid(BETA * (z0 - r)))


def test_kto_s_differs_from_kto_only_for_positive_rewards() -> None:
    # KTO-S's reference point is -sign(r)*z0: for r > 0 it is -z0 (KTO's is +z0), for r < 0 it is +z0 (same).
    assert one_example(2.0, 1.0, True, True) != pytest.approx(one_example(2.0, 1.0, True, False))
    assert one_example(-2.0, 1.0, True, True) == pytest.approx(one_example(-2.0, 1.0, True, False))


def test_weights_scale_each_class() -> None:
    assert one_example(1.0, 0.3, True, True, dw=1.7) == pytest.approx(1.7 * one_example(1.0, 0.3, True, True))
    assert one_example(1.0, 0.3, False, True, uw=0.6) == pytest.approx(0.6 * one_example(1.0, 0.3, False, True))


def test_negative_batch_kl_is_clamped_to_zero() -> None:
    assert one_example(1.0, -0.5, True, False) == pytest.approx(1 - sigmoid(BETA * 1.0))


@pytest.mark.parametrize("sign_correction", [False, True])
def test_gradients_reach_policy_logps_and_not_kl_logps(sign_correction: bool) -> None:
    g = torch.Generator().manual_seed(0)
    pc, pr, pkl = (torch.randn(n, generator=g, requires_grad=True) for n in (3, 2, 5))
    rc, rr, rkl = torch.randn(3, generator=g), torch.randn(2, generator=g), torch.randn(5, generator=g) - 2.0
    losses, cr, rr_, kl = kto_loss(pc, pr, pkl, rc, rr, rkl, beta=BETA, sign_correction=sign_correction)
    assert kl.item() > 0  # the KL path is live, so a missing detach would show up below
    grad_c, grad_r, grad_kl = torch.autograd.grad(losses.sum(), [pc, pr, pkl], allow_unused=True)
    assert grad_c is not None and torch.all(grad_c != 0)
    assert grad_r is not None and torch.all(grad_r != 0)
    assert grad_kl is None
    assert not cr.requires_grad and not rr_.requires_grad and not kl.requires_grad


@pytest.mark.parametrize("desirable", [True, False])
@pytest.mark.parametrize("sign_correction", [False, True])
def test_gradient_weight_is_the_autograd_derivative(desirable: bool, sign_correction: bool) -> None:
    r = torch.linspace(-6, 6, 25, dtype=torch.float64).requires_grad_()
    z0 = torch.tensor(0.7, dtype=torch.float64)
    s = 1.0 if desirable else -1.0
    ref = -torch.sign(r.detach()) * z0 if sign_correction else z0
    loss = 1 - torch.sigmoid(BETA * s * (r - ref))
    (grad,) = torch.autograd.grad(loss.sum(), [r])
    expected = gradient_weight(r.detach(), z0, beta=BETA, desirable=desirable, sign_correction=sign_correction)
    torch.testing.assert_close(grad.abs(), expected)


finite = st.floats(min_value=-20, max_value=20, allow_nan=False)
kl_values = st.floats(min_value=0, max_value=20, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(r=finite, z0_low=kl_values, dz=kl_values, desirable=st.booleans())
def test_kto_s_gradient_weight_never_increases_with_z0(r: float, z0_low: float, dz: float, desirable: bool) -> None:
    r_t = torch.tensor([r], dtype=torch.float64)
    kw = {"beta": BETA, "desirable": desirable, "sign_correction": True}
    assert gradient_weight(r_t, z0_low + dz, **kw).item() <= gradient_weight(r_t, z0_low, **kw).item() + 1e-15


@settings(max_examples=300, deadline=None)
@given(r=finite, z0=kl_values, desirable=st.booleans())
def test_kto_gradient_weight_peaks_at_r_equal_z0(r: float, z0: float, desirable: bool) -> None:
    kw = {"beta": BETA, "desirable": desirable, "sign_correction": False}
    at_peak = gradient_weight(torch.tensor([z0], dtype=torch.float64), z0, **kw).item()
    assert at_peak == pytest.approx(BETA / 4)
    assert gradient_weight(torch.tensor([r], dtype=torch.float64), z0, **kw).item() <= at_peak + 1e-15
