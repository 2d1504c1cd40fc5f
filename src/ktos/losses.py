r"""KTO and sign-corrected KTO-S as pure torch functions (no TRL import).

Notation, per example (all log-probabilities summed over completion tokens, in nats):

* ``r = log pi_theta(y|x) - log pi_ref(y|x)``, the implied reward before scaling;
* ``z0``: the KL reference point, the batch mean of ``log pi_theta(y'|x) - log pi_ref(y'|x)`` over
  mismatched prompt/completion pairs, detached and clamped at 0 (TRL's logged ``kl``);
* ``s = +1`` for a desirable example and ``-1`` for an undesirable one; ``w`` its class weight.

KTO (TRL's ``kto_loss``, Eq. 7 of the KTO paper)::

    loss = w * (1 - sigmoid(beta * s * (r - z0)))

KTO-S, the same with the reference point ``-sign(r) * z0`` (sign of the detached ``r``, ``sign(0) = 0``)::

    loss = w * (1 - sigmoid(beta * s * (r + sign(r) * z0)))

(KTO-zero, the reference point 0, is TRL's own ``loss_type="apo_zero_unpaired"``: see :mod:`ktos.loss_types`.)

Both return TRL's tuple ``(losses, chosen_rewards, rejected_rewards, kl)`` where the rewards are
``beta * r`` (detached) and ``kl`` is ``z0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def kl_reference_point(policy_KL_logps: Tensor, reference_KL_logps: Tensor) -> Tensor:
    """``z0 = max(0, mean(policy_KL_logps - reference_KL_logps))``, detached (sequence-level nats).

    Gathering across processes, as TRL does, is the caller's job; this is the single-process estimate.
    """
    return (policy_KL_logps - reference_KL_logps).mean().detach().clamp(min=0)


def reference_point(r: Tensor, z0: Tensor, *, sign_correction: bool) -> Tensor:
    """The point each reward is compared with: ``z0`` for KTO, ``-sign(r) * z0`` for KTO-S."""
    if sign_correction:
        return -torch.sign(r.detach()) * z0
    return z0.expand_as(r)


def kto_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_KL_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    reference_KL_logps: Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    sign_correction: bool,
    kl: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-example KTO (``sign_correction=False``) or KTO-S (``True``) losses.

    Desirable: ``w_d * (1 - sigmoid(beta * (r - ref)))``; undesirable:
    ``w_u * (1 - sigmoid(beta * (ref - r)))``, with ``ref`` from :func:`reference_point`.
    Gradients flow through the policy's chosen and rejected log-probs only: ``z0`` and the sign are
    detached. Returns ``(losses, chosen_rewards, rejected_rewards, kl)``: losses of the desirable
    examples then the undesirable ones (shape ``n_chosen + n_rejected``), rewards ``beta * r`` detached,
    and ``kl = z0`` (a 0-d tensor). ``kl`` may pass a precomputed ``z0`` (a trainer gathers it across
    processes); by default it is :func:`kl_reference_point` of the KL log-probs.
    """
    z0 = kl_reference_point(policy_KL_logps, reference_KL_logps) if kl is None else kl.detach()
    r_chosen = policy_chosen_logps - reference_chosen_logps
    r_rejected = policy_rejected_logps - reference_rejected_logps
    ref_chosen = reference_point(r_chosen, z0, sign_correction=sign_correction)
    ref_rejected = reference_point(r_rejected, z0, sign_correction=sign_correction)
    chosen_losses = 1 - F.sigmoid(beta * (r_chosen - ref_chosen))
    rejected_losses = 1 - F.sigmoid(beta * (ref_rejected - r_rejected))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses, beta * r_chosen.detach(), beta * r_rejected.detach(), z0


def gradient_weight(
    r: Tensor,
    z0: Tensor | float,
    *,
    beta: float,
    desirable: bool,
    sign_correction: bool,
    weight: float = 1.0,
) -> Tensor:
    """How hard an example's loss pulls on its reward: ``|d loss / d r| = beta * w * sigmoid'(x)``.

    ``x`` is the sigmoid's argument: ``beta * s * (r - z0)`` for KTO, ``beta * s * (r + sign(r) * z0)``
    for KTO-S, with ``sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x))``. For KTO it peaks (at ``beta*w/4``)
    where ``r = z0``; for KTO-S ``|x| = beta * (|r| + z0)`` when ``r != 0``, so it never grows with ``z0``.
    Units: loss per nat of log-ratio.
    """
    z0 = torch.as_tensor(z0, dtype=r.dtype)
    s = 1.0 if desirable else -1.0
    x = beta * s * (r - reference_point(r, z0, sign_correction=sign_correction))
    sig = torch.sigmoid(x)
    return beta * weight * sig * (1 - sig)
