"""The distillation loss registry (workbench/recipes/distill/losses.py) against hand computations.

Reference values come from plain Python / NumPy loops and closed forms written here, never from
the torch code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.recipes.distill import losses as L
from workbench.recipes.distill.losses import LOSSES, get_loss, register_loss, relation_matrix

DIST = ["kl", "reverse_kl", "skew_kl", "skew_reverse_kl", "js", "tvd"]
SAME_WIDTH = DIST + ["mse", "cosine", "cka"]
ALL = SAME_WIDTH + ["attention_kl", "relation_kl", "mi_alpha"]


# ------------------------------------------------------------------ plain-python references
def softmax(row, t=1.0):
    z = [v / t for v in row]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def kl_pq(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def ref_dist(name, s_row, t_row, t=1.0, alpha=0.1):
    ps, pt = softmax(s_row, t), softmax(t_row, t)
    if name == "kl":
        return kl_pq(pt, ps)
    if name == "reverse_kl":
        return kl_pq(ps, pt)
    if name == "skew_kl":
        return kl_pq(pt, [alpha * a + (1 - alpha) * b for a, b in zip(pt, ps)])
    if name == "skew_reverse_kl":
        return kl_pq(ps, [alpha * a + (1 - alpha) * b for a, b in zip(ps, pt)])
    if name == "js":
        m = [(a + b) / 2 for a, b in zip(pt, ps)]
        return 0.5 * kl_pq(pt, m) + 0.5 * kl_pq(ps, m)
    if name == "tvd":
        return 0.5 * sum(abs(a - b) for a, b in zip(pt, ps))
    raise AssertionError(name)


S_LOGITS = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 1.5], [3.0, 0.0, 0.0, -2.0]]
T_LOGITS = [[0.5, 0.5, 1.0, -1.0], [2.0, -0.3, 0.0, 0.4], [-1.0, 1.0, 2.5, 0.0]]


def tens(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def pair(name, seed=0, b=2, l=4):
    """Student / teacher inputs of the right kind for each loss."""
    g = torch.Generator().manual_seed(seed)
    if name == "attention_kl":
        s = torch.randn(b, 2, l, l, generator=g, dtype=torch.float64).softmax(-1)
        t = torch.randn(b, 2, l, l, generator=g, dtype=torch.float64).softmax(-1)
        return s, t
    if name == "relation_kl":
        return (torch.randn(b, l, 6, generator=g, dtype=torch.float64),
                torch.randn(b, l, 9, generator=g, dtype=torch.float64))
    return (torch.randn(b, l, 5, generator=g, dtype=torch.float64),
            torch.randn(b, l, 5, generator=g, dtype=torch.float64))


def params(name):
    return {"relation_kl": {"num_heads": 3}}.get(name, {})


# -------------------------------------------------------------------------------- registry
def test_registry_has_every_loss():
    assert set(ALL) <= set(LOSSES)
    for name in ALL:
        assert get_loss(name, "test") is LOSSES[name]


def test_unknown_name_is_config_error_with_hint():
    with pytest.raises(ConfigError) as e:
        get_loss("revers_kl", "stage 'student' recipe 'distill'")
    msg = str(e.value)
    assert "stage 'student' recipe 'distill'" in msg and "'revers_kl'" in msg
    assert "did you mean 'reverse_kl'" in msg and "known:" in msg and "tvd" in msg


def test_register_twice_with_another_fn_raises():
    def other(student, teacher, *, mask=None):
        return (student - teacher).sum()
    with pytest.raises(ValueError, match="already registered"):
        register_loss("kl")(other)
    assert LOSSES["kl"] is L.kl
    assert register_loss("kl")(L.kl) is L.kl        # the same function again is fine


# --------------------------------------------------------------------- distribution losses
@pytest.mark.parametrize("name", DIST)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distribution_loss_matches_hand(name, temperature):
    kw = {"temperature": temperature}
    if name.startswith("skew"):
        kw["alpha"] = 0.3
    got = get_loss(name, "test")(tens(S_LOGITS), tens(T_LOGITS), **kw).item()
    want = np.mean([ref_dist(name, s, t, temperature, kw.get("alpha", 0.1))
                    for s, t in zip(S_LOGITS, T_LOGITS)])
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["skew_kl", "skew_reverse_kl"])
def test_skew_default_alpha_is_paper_value(name):
    got = get_loss(name, "test")(tens(S_LOGITS), tens(T_LOGITS)).item()
    want = np.mean([ref_dist(name, s, t, 1.0, 0.1) for s, t in zip(S_LOGITS, T_LOGITS)])
    assert got == pytest.approx(want, rel=1e-9)


def test_skew_alpha_zero_is_plain_kl():
    s, t = tens(S_LOGITS), tens(T_LOGITS)
    assert L.skew_kl(s, t, alpha=0.0).item() == pytest.approx(L.kl(s, t).item(), rel=1e-12)
    assert L.skew_reverse_kl(s, t, alpha=0.0).item() == pytest.approx(L.reverse_kl(s, t).item(), rel=1e-12)
    # alpha = 1 compares a distribution with itself
    assert L.skew_kl(s, t, alpha=1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_direction_is_forward():
    s, t = tens([[4.0, 0.0, 0.0]]), tens([[0.0, 0.0, 0.0]])
    want_fwd = kl_pq(softmax([0.0, 0.0, 0.0]), softmax([4.0, 0.0, 0.0]))
    assert L.kl(s, t).item() == pytest.approx(want_fwd, rel=1e-12)
    assert L.kl(s, t).item() != pytest.approx(L.reverse_kl(s, t).item(), rel=1e-3)


def test_teacher_with_minus_inf_logits_is_finite():
    s = tens([[1.0, 2.0, 0.5]], grad=True)
    t = tens([[1.0, float("-inf"), 0.5]])
    loss = L.kl(s, t)
    loss.backward()
    want = kl_pq(softmax([1.0, -1e300, 0.5]), softmax([1.0, 2.0, 0.5]))
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert torch.isfinite(s.grad).all()


# ------------------------------------------------------------------- representation losses
def test_mse_and_cosine_match_hand():
    s, t = [[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]], [[1.5, 1.0, 3.0], [2.0, 2.0, 0.0]]
    want_mse = sum((a - b) ** 2 for rs, rt in zip(s, t) for a, b in zip(rs, rt)) / 6
    assert L.mse(tens(s), tens(t)).item() == pytest.approx(want_mse, rel=1e-12)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    want_cos = np.mean([1 - cos(a, b) for a, b in zip(s, t)])
    assert L.cosine(tens(s), tens(t)).item() == pytest.approx(want_cos, rel=1e-12)


def np_cka(x, y):
    """Kornblith et al.'s Gram-matrix form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(k * l_) / math.sqrt(np.sum(k * k) * np.sum(l_ * l_))


def test_cka_matches_gram_form_with_different_widths():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 7))
    got = L.cka(tens(x.tolist()), tens(y.tolist())).item()
    assert got == pytest.approx(1 - np_cka(x.reshape(6, 4), y.reshape(6, 7)), rel=1e-9)
    # invariant to an orthogonal transform and isotropic scaling of one side
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = (3.0 * x @ q).tolist()
    assert L.cka(tens(rotated), tens(x.tolist())).item() == pytest.approx(0.0, abs=1e-9)


def np_token_kl(s, t, mask, eps=1e-12):
    """Loop reference for attention_kl: KL(t || s) per (b, h, query) over real keys."""
    b, h, l, _ = s.shape
    vals = []
    for bi in range(b):
        for hi in range(h):
            for i in range(l):
                if mask is not None and not mask[bi][i]:
                    continue
                vals.append(sum(t[bi, hi, i, j] * math.log((t[bi, hi, i, j] + eps) / (s[bi, hi, i, j] + eps))
                                for j in range(l) if mask is None or mask[bi][j]))
    return float(np.mean(vals))


def test_attention_kl_matches_hand_with_mask():
    s, t = pair("attention_kl", seed=3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    want = np_token_kl(s.numpy(), t.numpy(), mask.tolist())
    assert L.attention_kl(s, t, mask=mask).item() == pytest.approx(want, rel=1e-9)
    want_all = np_token_kl(s.numpy(), t.numpy(), None)
    assert L.attention_kl(s, t).item() == pytest.approx(want_all, rel=1e-9)


def np_relation_logp(x, heads, mask):
    """log softmax(x_h x_h^T / sqrt(d_h)) per head over real keys, loops; -inf at masked keys."""
    b, l, d = x.shape
    dh = d // heads
    out = np.full((b, heads, l, l), -np.inf)
    for bi in range(b):
        for hi in range(heads):
            xh = x[bi, :, hi * dh:(hi + 1) * dh]
            for i in range(l):
                keys = [j for j in range(l) if mask is None or mask[bi][j]]
                sc = [float(xh[i] @ xh[j]) / math.sqrt(dh) for j in keys]
                m = max(sc)
                lse = m + math.log(sum(math.exp(v - m) for v in sc))
                for j, v in zip(keys, sc):
                    out[bi, hi, i, j] = v - lse
    return out


def test_relation_kl_matches_hand_with_different_widths():
    s, t = pair("relation_kl", seed=5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    for m in (None, mask):
        ml = None if m is None else m.tolist()
        ls, lt = np_relation_logp(s.numpy(), 3, ml), np_relation_logp(t.numpy(), 3, ml)
        vals = []
        for bi in range(2):
            for hi in range(3):
                for i in range(4):
                    if ml is not None and not ml[bi][i]:
                        continue
                    vals.append(sum(math.exp(lt[bi, hi, i, j]) * (lt[bi, hi, i, j] - ls[bi, hi, i, j])
                                    for j in range(4) if np.isfinite(lt[bi, hi, i, j])))
        got = L.relation_kl(s, t, mask=m, num_heads=3).item()
        assert got == pytest.approx(float(np.mean(vals)), rel=1e-9)


def test_relation_matrix_is_log_probs_with_masked_keys():
    x = pair("relation_kl")[1]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    lp = relation_matrix(x, 3, mask)
    assert lp.shape == (2, 3, 4, 4)
    assert torch.isneginf(lp[1, :, :, 2:]).all()
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 3, 4, dtype=lp.dtype))
    np.testing.assert_allclose(lp.numpy(), np_relation_logp(x.numpy(), 3, mask.tolist()), rtol=1e-10)
    with pytest.raises(ValueError, match="divisible"):
        relation_matrix(x, 4)


# -------------------------------------------------------------------------------- MI-alpha
def np_mi_alpha(s, t, alpha, tau):
    """Loop reference: -I_alpha (Poole et al., eq. 12, constant baseline e) on cosine/tau scores."""
    sn = s / np.linalg.norm(s, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    n = s.shape[0]
    f = [[float(tn[i] @ sn[j]) / tau for j in range(n)] for i in range(n)]   # f[i][j] = f(x_j, y_i)

    def b(i, j):
        loo = sum(math.exp(f[i][k]) for k in range(n) if k != j) / (n - 1)
        return alpha * loo + (1 - alpha) * math.e
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    joint = sum(f[i][i] - math.log(b(i, j)) for i, j in pairs) / len(pairs)
    marg = sum(math.exp(f[i][j]) / b(i, i) for i, j in pairs) / len(pairs)
    return -(1 + joint - marg)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_mi_alpha_matches_hand(alpha):
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = L.mi_alpha(tens(s.tolist()), tens(t.tolist()), alpha=alpha, temperature=0.5).item()
    assert got == pytest.approx(np_mi_alpha(s, t, alpha, 0.5), rel=1e-9)


def test_mi_alpha_zero_is_nwj_closed_form():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    sn = s / np.linalg.norm(s, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    f = tn @ sn.T / 0.1
    off = ~np.eye(4, dtype=bool)
    nwj = np.mean(np.diag(f)) - np.mean(np.exp(f[off] - 1))
    assert L.mi_alpha(tens(s.tolist()), tens(t.tolist()), alpha=0.0).item() == pytest.approx(-nwj, rel=1e-9)


def test_mi_alpha_decreases_as_student_aligns():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 6, generator=g, dtype=torch.float64)
    s0 = torch.randn(8, 6, generator=g, dtype=torch.float64)
    aligned = L.mi_alpha(t.clone(), t).item()
    values = [L.mi_alpha(s0 + w * (t - s0), t).item() for w in (0.0, 0.5, 0.9)]
    assert values[0] > values[1] > values[2] > aligned
    # and gradient descent on the student lowers it
    s = s0.clone().requires_grad_(True)
    opt = torch.optim.SGD([s], lr=0.05)
    start = L.mi_alpha(s, t).item()
    for _ in range(30):
        opt.zero_grad()
        L.mi_alpha(s, t).backward()
        opt.step()
    assert L.mi_alpha(s, t).item() < start


def test_mi_alpha_width_mismatch_names_both_widths():
    with pytest.raises(ValueError, match="width 4 and teacher width 6"):
        L.mi_alpha(torch.randn(3, 4), torch.randn(3, 6))


# -------------------------------------------------------------------- properties, all losses
@pytest.mark.parametrize("name", [n for n in ALL if n != "mi_alpha"])
def test_identical_inputs_give_zero(name):
    _, t = pair(name, seed=7)
    if name == "relation_kl":      # same width on both sides
        t = t[..., :6]
    got = get_loss(name, "test")(t.clone(), t, **params(name)).item()
    assert got == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_padding_under_mask_does_not_change_value(name):
    s, t = pair(name, seed=11, b=2, l=5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    fn = get_loss(name, "test")
    base = fn(s, t, mask=mask, **params(name)).item()
    s2, t2 = s.clone(), t.clone()
    pad = mask == 0
    if name == "attention_kl":        # garbage in padded query rows and key columns
        s2[pad[:, None, :, None].expand_as(s2)] = 0.9
        s2[pad[:, None, None, :].expand_as(s2)] = 0.7
        t2[pad[:, None, :, None].expand_as(t2)] = 0.1
    else:
        s2[pad] = 1e3
        t2[pad] = -5.0
    assert fn(s2, t2, mask=mask, **params(name)).item() == pytest.approx(base, rel=1e-9, abs=1e-12)
    if name in DIST + ["mse", "cosine"]:   # per-row losses: equal to the real rows alone
        keep = mask.bool()
        assert fn(s[keep], t[keep]).item() == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_gradient_flows_to_student(name):
    s, t = pair(name, seed=13)
    s = s.clone().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    get_loss(name, "test")(s, t, mask=mask, **params(name)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SAME_WIDTH + ["attention_kl", "relation_kl"])
def test_incompatible_shapes_name_both(name):
    s = torch.rand(2, 3, 3, 3) if name == "attention_kl" else torch.randn(2, 3, 6)
    t = torch.rand(2, 3, 4, 4) if name == "attention_kl" else torch.randn(2, 4, 6)
    with pytest.raises(ValueError) as e:
        get_loss(name, "test")(s, t, **({"num_heads": 3} if name == "relation_kl" else {}))
    assert str(tuple(s.shape)) in str(e.value) and str(tuple(t.shape)) in str(e.value)


def test_wrong_mask_shape_is_value_error():
    with pytest.raises(ValueError, match="mask shape"):
        L.kl(torch.randn(2, 3, 5), torch.randn(2, 3, 5), mask=torch.ones(2, 4))
