"""Distribution-matching math (SPEC 3): hand-computed values, and exact-gradient identities on
a toy categorical policy π_θ = softmax(θ) where every outcome is enumerated, so that batch
means are exact expectations and the surrogate gradients must equal autograd of the
closed-form divergences."""

from __future__ import annotations

import math

import pytest
import torch

from tokenalign.objectives.dm_math import (
    ZEstimator,
    cdpg_advantages,
    cdpg_log_z,
    dm_estimates,
    dm_policy_loss,
    dpg_advantages,
    fdpg_advantages,
    fdpg_pseudo_rewards,
    fit_lambdas,
    log_target,
    should_swap_proposal,
)

F64 = torch.float64
INF = math.inf


def T(x):
    return torch.tensor(x, dtype=F64)


def L(x):
    return torch.log(T(x))


def close(a, b, tol=1e-10):
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), rtol=0, atol=tol)


# ---------------------------------------------------------------- log_target, fit_lambdas


def test_log_target_each_factor_and_combined():
    base = L([0.5, 0.25, 0.25])
    b = torch.tensor([1, 0, 1])
    r, beta = T([1.0, 2.0, 3.0]), 2.0
    phi, lam = T([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), T([0.5, -1.0])
    close(log_target(base), base)
    close(log_target(base, constraint=b), base + T([0.0, -INF, 0.0]))
    close(log_target(base, constraint=b.bool()), base + T([0.0, -INF, 0.0]))
    close(log_target(base, reward=r, beta=beta), base + T([0.5, 1.0, 1.5]))
    close(log_target(base, features=phi, lambdas=lam), base + T([0.5, -1.0, -0.5]))
    both = log_target(base, constraint=b, reward=r, beta=beta, features=phi, lambdas=lam)
    close(both, base + T([1.0, -INF, 1.0]))
    assert both[1] == -INF
    assert log_target(base.float(), reward=r, beta=beta).dtype == torch.float32


@pytest.mark.parametrize("arg", ["log_base", "constraint", "reward", "features", "lambdas"])
def test_log_target_nan_raises_naming_the_argument(arg):
    kw = dict(log_base=L([0.5, 0.5]), constraint=T([1.0, 1.0]), reward=T([1.0, 2.0]), beta=1.0,
              features=T([[1.0], [0.0]]), lambdas=T([1.0]))
    kw[arg] = kw[arg].clone()
    kw[arg].view(-1)[0] = math.nan
    base = kw.pop("log_base")
    with pytest.raises(ValueError, match=arg):
        log_target(base, **kw)


def test_log_target_validation():
    base = L([0.5, 0.5])
    for beta in (None, 0.0, -1.0):
        with pytest.raises(ValueError, match="beta"):
            log_target(base, reward=T([1.0, 2.0]), beta=beta)
    with pytest.raises(ValueError, match="0/1"):
        log_target(base, constraint=T([0.5, 1.0]))
    with pytest.raises(ValueError, match="together"):
        log_target(base, features=T([[1.0], [0.0]]))


def _binary_feature_samples():
    # 20 samples of π_0: φ1 has frequency 0.2, φ2 frequency 0.5, independent.
    rows = [[1, 1]] * 2 + [[1, 0]] * 2 + [[0, 1]] * 8 + [[0, 0]] * 8
    return T(rows)


def test_fit_lambdas_closed_form():
    # Exponential tilting keeps the features independent: λ_k = log(μ/(1-μ) · (1-f)/f).
    phi = _binary_feature_samples()
    mu = T([0.5, 0.75])
    exact = T([math.log(4.0), math.log(3.0)])
    lam, info = fit_lambdas(phi, mu, tol=1e-12)
    assert info["converged"] and 0 < info["iterations"] < 1000
    close(lam, exact, 1e-9)
    close(info["moments_hat"], mu, 1e-12)
    lam, info = fit_lambdas(phi, mu)  # SPEC defaults: tol 0.01 on the moments
    assert info["converged"]
    assert (info["moments_hat"] - mu).abs().max() < 0.01
    assert (lam - exact).abs().max() < 0.1
    close(info["moments_hat"], torch.softmax(phi @ lam, 0) @ phi, 1e-12)


def test_fit_lambdas_reports_non_convergence():
    lam, info = fit_lambdas(_binary_feature_samples(), T([0.5, 0.75]), max_iter=2)
    assert info["converged"] is False and info["iterations"] == 2
    # two updates from 0: λ1 = 0.5*(0.5-0.2) = 0.15, then + 0.5*(0.5 - μ̂(0.15))
    m = 0.2 * math.exp(0.15) / (0.2 * math.exp(0.15) + 0.8)
    close(lam[0], 0.15 + 0.5 * (0.5 - m), 1e-7)  # float64 features -> float64 λ
    lam, info = fit_lambdas(_binary_feature_samples(), T([0.2, 0.5]))
    assert info["converged"] and info["iterations"] == 0
    close(lam, T([0.0, 0.0]))


# ---------------------------------------------------------------- ZEstimator, DPG


def test_z_estimator_cumulative_mean_across_batches():
    est = ZEstimator()
    with pytest.raises(RuntimeError):
        est.value
    assert est.update(L([1.0, 2.0, 3.0])) == pytest.approx(2.0, abs=1e-12)
    assert est.update(L([4.0, 5.0])) == pytest.approx(3.0, abs=1e-12)
    assert est.update(torch.full((2,), -INF, dtype=F64)) == pytest.approx(15.0 / 7.0, abs=1e-12)
    assert est.log_value == pytest.approx(math.log(15.0 / 7.0), abs=1e-12)
    big = ZEstimator()
    big.update(T([1000.0, 1000.0 + math.log(3.0)]))  # P/q = e^1000: log space, no overflow
    assert big.log_value == pytest.approx(1000.0 + math.log(2.0), abs=1e-9)
    assert big.value == INF


def test_z_estimator_ema_and_state_round_trip():
    est = ZEstimator(momentum=0.9)
    est.update(L([1.0, 2.0, 3.0]))
    assert est.value == pytest.approx(2.0, abs=1e-12)
    assert est.update(L([4.0, 5.0])) == pytest.approx(0.9 * 2.0 + 0.1 * 4.5, abs=1e-12)
    for momentum in (None, 0.7):
        a, b = ZEstimator(momentum), ZEstimator(momentum)
        a.update(L([1.0, 2.0]))
        b.load_state_dict(a.state_dict())
        for batch in (L([3.0]), L([0.5, 7.0, 2.0])):
            assert a.update(batch) == b.update(batch)
        assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError):
        ZEstimator(momentum=1.0)


def test_dpg_advantages_by_hand():
    lt, lq, lp = L([2.0, 1.0, 0.0]), L([0.5, 0.25, 0.25]), L([0.25, 0.5, 0.25])
    # P/q = [4, 4, 0], Z π/q = [1, 4, 2]
    close(dpg_advantages(lt, lq, lp, z=2.0), T([3.0, 0.0, -2.0]))
    close(dpg_advantages(lt, lq, lp, z=T(2.0), baseline=False), T([4.0, 4.0, 0.0]))
    # huge log-probabilities: only differences matter
    close(dpg_advantages(lt + 800, lq + 800, lp + 800, z=2.0), T([3.0, 0.0, -2.0]), 1e-9)
    lp_grad = lp.clone().requires_grad_()
    assert not dpg_advantages(lt, lq, lp_grad, 2.0).requires_grad
    loss = dm_policy_loss(lp_grad, T([3.0, 0.0, -2.0]))
    loss.backward()
    close(loss, -(3.0 * lp[0] - 2.0 * lp[2]) / 3)
    close(lp_grad.grad, T([-1.0, 0.0, 2.0 / 3.0]))


# ---------------------------------------------------------------- f-DPG


def test_fdpg_pseudo_rewards_by_hand_and_p_zero_limits():
    # log t = log π - log P + log Z = [0, log 2, +inf (P = 0)]
    lp, lt, lz = L([0.5, 0.5, 0.5]), L([1.0, 0.5, 0.0]), math.log(2.0)
    f = lambda d, **kw: fdpg_pseudo_rewards(lp, lt, lz, d, **kw)  # noqa: E731
    close(f("kl"), T([1.0, 0.5, 0.0]))
    close(f("rkl"), T([-1.0, -math.log(2.0) - 1.0, -100.0]))
    close(f("rkl", min_pseudo_reward=-7.0), T([-1.0, -math.log(2.0) - 1.0, -7.0]))
    close(f("js"), T([0.0, 0.5 * math.log(0.75), -0.5 * math.log(2.0)]))
    close(f("tv"), T([0.0, -0.5, -0.5]))
    for d in ("kl", "rkl", "js", "tv"):
        assert torch.isfinite(f(d)).all()
    with pytest.raises(ValueError, match="divergence"):
        f("hellinger")


def test_fdpg_advantages_by_hand():
    r, lw = T([1.0, 2.0, 3.0]), L([1.0, 1.0, 2.0])
    close(fdpg_advantages(r), T([-1.0, 0.0, 1.0]))
    close(fdpg_advantages(r, baseline=False), r)
    # self-normalised weights [0.75, 0.75, 1.5], b = 9/4
    close(fdpg_advantages(r, lw), T([-0.9375, -0.1875, 1.125]))
    close(fdpg_advantages(r, lw, baseline=False), T([0.75, 1.5, 4.5]))
    close(fdpg_advantages(r, lw, self_normalise=False), T([-1.25, -0.25, 1.5]))
    close(fdpg_advantages(r, lw + 900.0), T([-0.9375, -0.1875, 1.125]))


# Toy categorical policy. Enumerating each of the K outcomes once is an exact expectation
# under the uniform proposal q = 1/K, so mean_i(w_i A_i ∇log π_i) with w = π/q is exactly
# E_π[A ∇log π].
K = 6
_g = torch.Generator().manual_seed(0)
THETA = torch.randn(K, generator=_g, dtype=F64)
LOG_BASE = torch.log_softmax(torch.randn(K, generator=_g, dtype=F64), 0)
REWARD = torch.randn(K, generator=_g, dtype=F64)
BETA = 0.7
LOG_Q = torch.full((K,), -math.log(K), dtype=F64)
CONSTRAINT = torch.tensor([1, 1, 0, 1, 1, 1])  # p has a zero: the limits are exercised


def grad_of(fn, theta=THETA):
    theta = theta.clone().requires_grad_()
    fn(theta).backward()
    return theta.grad


def _surrogate(lt, divergence, baseline, self_normalise=True):
    log_z = torch.logsumexp(lt, 0)

    def loss(theta):
        lp = torch.log_softmax(theta, 0)
        r = fdpg_pseudo_rewards(lp, lt, log_z, divergence)
        return dm_policy_loss(lp, fdpg_advantages(r, lp.detach() - LOG_Q, baseline, self_normalise))

    return loss


@pytest.mark.parametrize("baseline", [True, False])
@pytest.mark.parametrize("self_normalise", [True, False])
def test_rkl_fdpg_gradient_is_kl_regularised_rl_gradient(baseline, self_normalise):
    """The issue's required test: -∇KL(π||p*) = ∇J / β, p* ∝ π_0 exp(r/β)."""
    lt = log_target(LOG_BASE, reward=REWARD, beta=BETA)

    def objective(theta):  # J(θ) = E_π[r] - β KL(π||π_0), closed form
        pi, lp = torch.softmax(theta, 0), torch.log_softmax(theta, 0)
        return (pi * REWARD).sum() - BETA * (pi * (lp - LOG_BASE)).sum()

    g_surrogate = grad_of(_surrogate(lt, "rkl", baseline, self_normalise))
    close(g_surrogate, -grad_of(objective) / BETA, 1e-12)
    assert g_surrogate.abs().max() > 1e-3  # not a vacuous 0 = 0


def test_rkl_pseudo_reward_is_rlhf_reward_over_beta():
    lt = log_target(LOG_BASE, reward=REWARD, beta=BETA)
    lp, lz = torch.log_softmax(THETA, 0), torch.logsumexp(lt, 0)
    rlhf = REWARD / BETA - (lp - LOG_BASE)
    close(fdpg_pseudo_rewards(lp, lt, lz, "rkl") - rlhf, torch.full((K,), -lz.item() - 1.0, dtype=F64), 1e-12)


def _kl_p_pi(p):
    return lambda theta: (torch.xlogy(p, p) - p * torch.log_softmax(theta, 0)).sum()


@pytest.mark.parametrize("baseline", [True, False])
def test_forward_kl_dpg_and_gdcpp_gradients(baseline):
    lt = log_target(LOG_BASE, constraint=CONSTRAINT, reward=REWARD, beta=BETA)
    p = torch.softmax(lt, 0)
    est = ZEstimator()
    z = est.update(lt - LOG_Q)  # exact under enumeration of the uniform proposal
    close(z, torch.logsumexp(lt, 0).exp(), 1e-12)

    def gdc(theta):
        lp = torch.log_softmax(theta, 0)
        return dm_policy_loss(lp, dpg_advantages(lt, LOG_Q, lp, z, baseline))

    g_kl = grad_of(_kl_p_pi(p))
    close(grad_of(gdc), z * g_kl, 1e-12)  # expected GDC++ gradient = Z ∇KL(p||π)
    close(grad_of(_surrogate(lt, "kl", baseline)), g_kl, 1e-12)
    assert g_kl.abs().max() > 1e-3


def _js(p):
    def js(theta):
        pi = torch.softmax(theta, 0)
        m = (pi + p) / 2
        return 0.5 * (torch.xlogy(pi, pi) - torch.xlogy(pi, m)).sum() + 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum()

    return js


@pytest.mark.parametrize("baseline", [True, False])
@pytest.mark.parametrize("divergence", ["js", "tv"])
def test_js_and_tv_gradients_match_closed_form(divergence, baseline):
    lt = log_target(LOG_BASE, constraint=CONSTRAINT, reward=REWARD, beta=BETA)
    p = torch.softmax(lt, 0)
    closed = _js(p) if divergence == "js" else (lambda theta: 0.5 * (torch.softmax(theta, 0) - p).abs().sum())
    g = grad_of(closed)
    close(grad_of(_surrogate(lt, divergence, baseline)), g, 1e-12)
    assert g.abs().max() > 1e-3
    if divergence == "js":  # the ½ scaling: JS ≤ log 2, reached for disjoint supports
        far = torch.tensor([30.0, -30, -30, -30, -30, -30], dtype=F64)
        assert _js(torch.tensor([0.0, 0.5, 0.5, 0, 0, 0], dtype=F64))(far) == pytest.approx(math.log(2.0), abs=1e-10)


# ---------------------------------------------------------------- CDPG


def test_cdpg_log_z_and_advantages_by_hand():
    # 2 contexts x 2 samples; π_0/π = [1, 2 | 0.5, 4], b = [1, 0 | 1, 1], eps = 0.5
    lp = L([0.5, 0.25, 0.5, 0.125])
    lb = L([0.5, 0.5, 0.25, 0.5])
    b = torch.tensor([True, False, True, True])
    close(cdpg_log_z(lb, lp, b, 2, eps=0.5), L([1.25, 3.375]))
    adv = cdpg_advantages(lb, lp, b, 2, eps=0.5)
    close(adv, T([0.2, -0.2, 0.75 / 3.375 - 1, 6 / 3.375 - 1]))
    close(adv.view(2, 2).sum(1), T([0.0, 0.0]))
    close(cdpg_advantages(lb, lp, b, 2, eps=0.5, baseline=False), adv + 1)
    close(cdpg_log_z(lb, lp, b, 2), L([(1 + 1e-4) / 2 + 1e-4, (1 + 1e-4) * 2.25]))
    with pytest.raises(ValueError):
        cdpg_log_z(lb, lp, b, 3)


@pytest.mark.parametrize("baseline", [True, False])
def test_cdpg_gradient_is_sum_of_per_context_forward_kls(baseline):
    """π(·|c) rational, and each group holds outcomes in exact proportion to π(·|c), so the
    group mean is E_π and the estimated Z_c is exact: ∇loss = (1/C) Σ_c ∇KL(p_c || π_c)."""
    probs = T([[1 / 2, 1 / 4, 1 / 8, 1 / 8], [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    outcomes = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 3], [0, 0, 1, 1, 2, 2, 3, 3]])
    ctx = torch.arange(2).repeat_interleave(8)
    log_base = torch.log_softmax(torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=F64), 1)
    b = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=F64)
    eps = 1e-4
    p = torch.softmax(torch.log(b + eps) + log_base, 1)
    theta0 = probs.log()

    def loss(theta):
        lp = torch.log_softmax(theta, 1)[ctx, outcomes.view(-1)]
        sample = lambda x: x[ctx, outcomes.view(-1)]  # noqa: E731
        adv = cdpg_advantages(sample(log_base), lp, sample(b), 8, eps, baseline)
        return dm_policy_loss(lp, adv)

    def kls(theta):
        return (torch.xlogy(p, p) - p * torch.log_softmax(theta, 1)).sum()

    g = grad_of(kls, theta0)
    close(grad_of(loss, theta0), g / 2, 1e-12)
    assert g.abs().max() > 1e-2


# ---------------------------------------------------------------- estimates, proposal swap


def test_dm_estimates_exact_small_case_with_zero_p():
    # q uniform over 3 enumerated outcomes: P = [1, 1, 0] -> Z = 2, p = [.5, .5, 0]
    lt, lq, lp = L([1.0, 1.0, 0.0]), L([1 / 3] * 3), L([0.25, 0.25, 0.5])
    est = dm_estimates(lt, lq, lp, constraint=torch.tensor([1, 1, 0]))
    assert all(math.isfinite(v) for v in est.values())
    assert est["log_z"] == pytest.approx(math.log(2.0), abs=1e-12)
    assert est["kl_p_pi"] == pytest.approx(math.log(2.0), abs=1e-12)
    assert est["kl_p_q"] == pytest.approx(math.log(1.5), abs=1e-12)
    assert est["tv_p_pi"] == pytest.approx(0.5, abs=1e-12)
    assert est["constraint_satisfaction"] == pytest.approx(0.5, abs=1e-12)  # π-rate, not the q-rate 2/3
    given = dm_estimates(lt, lq, lp, log_z=math.log(4.0))
    assert given["log_z"] == pytest.approx(math.log(4.0))
    assert given["kl_p_pi"] == pytest.approx(-math.log(4.0) + 0.5 * (math.log(4.0)), abs=1e-12)
    shifted = dm_estimates(lt + 1000.0, lq, lp)
    assert shifted["log_z"] == pytest.approx(1000.0 + math.log(2.0), abs=1e-9)
    for key in ("kl_p_pi", "kl_p_q", "tv_p_pi"):
        assert shifted[key] == pytest.approx(est[key], abs=1e-9)


def test_dm_estimates_all_samples_violating():
    est = dm_estimates(T([-INF, -INF]), L([0.5, 0.5]), L([0.25, 0.75]), constraint=T([0.0, 0.0]))
    assert est["log_z"] == -INF and est["kl_p_pi"] == INF and est["kl_p_q"] == INF
    assert est["tv_p_pi"] == pytest.approx(0.5, abs=1e-12)  # ½ E_q[π/q] with P = 0
    assert est["constraint_satisfaction"] == 0.0


def test_dm_estimates_proposal_equal_to_target():
    g = torch.Generator().manual_seed(2)
    lt = torch.randn(50, generator=g, dtype=F64) * 3
    log_z_true = 1.7
    lq = lt - log_z_true  # q = p on the sampled outcomes
    lp = lq + 0.3 * torch.randn(50, generator=g, dtype=F64)
    est = dm_estimates(lt, lq, lp)
    assert est["log_z"] == pytest.approx(log_z_true, abs=1e-12)
    assert est["kl_p_q"] == pytest.approx(0.0, abs=1e-12)
    close(dm_estimates(lt, lq, lq, torch.ones(50))["constraint_satisfaction"], 1.0, 1e-12)


def test_should_swap_proposal():
    assert should_swap_proposal(0.5, 1.0)
    assert not should_swap_proposal(1.0, 1.0)
    assert not should_swap_proposal(math.nan, 1.0)
