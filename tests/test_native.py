"""The optional C kernel (mixvae.native) against a float64 reference and the PyTorch path, its
multi-threaded row split, and the fallback where it cannot be built."""
import os
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from mixvae import native
from mixvae.distributions import mixture_log_prob

from .test_mixture_accuracy import reference


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's forward calls (with or without the rows' gradient); skips where this
    machine cannot build it."""
    native.reset()
    if native.library() is None:
        pytest.skip(f"the C kernel is unavailable here: {native.unavailable}")
    calls = []
    fn = native.mixture_lse_forward
    monkeypatch.setattr(native, "mixture_lse_forward", lambda *a, **k: calls.append(a[0].shape) or fn(*a, **k))
    return calls


def _inputs(n, k, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)              # moderate sizes: the matrix form is certified
    logits, means = torch.randn(k, generator=g), torch.randn(k, dim, generator=g)
    logvars = 0.3 * torch.randn(k, dim, generator=g)
    return z, logits, means, logvars, torch.randn(n, generator=g)


def _value_and_grads(z, logits, means, logvars, cot):
    ts = [t.clone().requires_grad_() for t in (z, logits, means, logvars)]
    out = mixture_log_prob(ts[0], torch.log_softmax(ts[1], -1), ts[2], ts[3])
    return out.detach(), torch.autograd.grad((out * cot).sum(), ts)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
@pytest.mark.parametrize("n,k,threads", [(1, 1, 1), (37, 5, 1), (5000, 64, 1), (5000, 64, 2), (3001, 300, 3)])
def test_kernel_matches_float64(kernel_calls, dim, n, k, threads):
    """Values within 1e-5 of their size, gradients within 1e-5 of the largest entry (norm-wise),
    over ragged row counts (not multiples of the kernel's 16 lanes) and several threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z, logits, means, logvars, cot = _inputs(n, k, dim)
        out, grads = _value_and_grads(z, logits, means, logvars, cot)
    finally:
        torch.set_num_threads(previous)
    assert kernel_calls == [(n, dim)]
    want, _, (g_z, g_m, g_l, g_logits) = reference(z, logits, means, logvars, cot)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for got, ref in zip(grads, (g_z, g_logits, g_m, g_l)):
        scale = ref.abs().max().item()
        assert (got.double() - ref).abs().max().item() <= 1e-5 * scale + 1e-6


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
@pytest.mark.parametrize("n,k,threads", [(37, 5, 1), (5000, 64, 2)])
def test_the_rows_gradient_alone_comes_from_the_forward_pass(kernel_calls, monkeypatch, dim, n, k, threads):
    """Where only z needs a gradient (a KL to a detached prior), one pass gives the value and the
    rows' part of dL/dz: values identical to the plain forward's, dL/dz within 1e-5 of float64
    (largest entry), and the backward calls no kernel."""
    z, logits, means, logvars, cot = _inputs(n, k, dim)
    lw = torch.log_softmax(logits, -1)
    monkeypatch.setattr(native, "mixture_lse_backward", None)     # not called: the forward did the work
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        zg = z.clone().requires_grad_()
        out = mixture_log_prob(zg, lw, means, logvars)
        (g_z,) = torch.autograd.grad((out * cot).sum(), zg)
        with torch.no_grad():
            plain = mixture_log_prob(z, lw, means, logvars)
    finally:
        torch.set_num_threads(previous)
    assert kernel_calls == [(n, dim), (n, dim)]
    assert torch.equal(out.detach(), plain)
    want, _, (ref, *_) = reference(z, logits, means, logvars, cot)
    assert (g_z.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6


def test_kernel_at_the_protocol_shape_is_as_accurate_as_the_pytorch_path(kernel_calls, monkeypatch):
    """The 2D protocol's shape (51 200 samples, 64 components), both paths against float64. The
    kernel adds its column sums over rows in float64 blocks, so its gradients are closer (errors
    measured 5e-7 to 3e-6 of the largest entry, against 7e-7 to 2e-5 for the PyTorch path)."""
    z, logits, means, logvars, cot = _inputs(51_200, 64, 2, seed=1)
    want, _, (g_z, g_m, g_l, g_logits) = reference(z, logits, means, logvars, cot)
    fast = _value_and_grads(z, logits, means, logvars, cot)
    monkeypatch.setenv("MIXVAE_NATIVE", "0")
    native.reset()
    plain = _value_and_grads(z, logits, means, logvars, cot)
    native.reset()
    assert len(kernel_calls) == 1 and native.unavailable is None
    for (out, grads), tol in [(fast, 1e-5), (plain, 1e-4)]:
        torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-6)
        for got, ref in zip(grads, (g_z, g_logits, g_m, g_l)):
            assert (got.double() - ref).abs().max() <= tol * ref.abs().max()


def test_inputs_the_kernel_does_not_serve_take_the_pytorch_path(kernel_calls, monkeypatch):
    z, logits, means, logvars, _ = _inputs(100, 8, 2)
    lw = torch.log_softmax(logits, -1)
    mixture_log_prob(z.double(), lw.double(), means.double(), logvars.double())
    mixture_log_prob(torch.randn(100, 5), torch.zeros(8), torch.randn(8, 5), torch.zeros(8, 5))   # D = 5
    z[3, 0] = float("inf")
    assert not mixture_log_prob(z, lw, means, logvars)[3].isfinite()
    mixture_log_prob(z[4:], lw, means, logvars, tol=-1.0)      # every column direct in float64, on request
    assert kernel_calls == []
    # Standard deviations of 1e-5 and rows about 1 away: terms near -1e10 nats, whose float32
    # rounding (1e3 nats) is not certified; the kernel's result is set aside for the PyTorch
    # path's (float64, direct sums).
    far = means[torch.arange(100) % 8] + torch.randn(100, 2)
    got = mixture_log_prob(far, lw, means, torch.full((8, 2), -23.0))
    assert kernel_calls == [(100, 2)]
    monkeypatch.setenv("MIXVAE_NATIVE", "0")
    native.reset()
    torch.testing.assert_close(got, mixture_log_prob(far, lw, means, torch.full((8, 2), -23.0)), rtol=0, atol=0)
    native.reset()


def test_build_is_cached_and_failures_fall_back(tmp_path, monkeypatch):
    """Built once into $MIXVAE_CACHE/native; with no working compiler, or MIXVAE_NATIVE=0, the
    library is None, the reason is kept, and mixture_log_prob still gives the same values."""
    z, logits, means, logvars, _ = _inputs(300, 6, 2)
    want = torch.logsumexp(torch.distributions.Normal(means, (0.5 * logvars).exp()).log_prob(z[:, None]).sum(-1)
                           + torch.log_softmax(logits, -1), -1)
    monkeypatch.setenv("MIXVAE_CACHE", str(tmp_path))
    for env, reason in [({"MIXVAE_NATIVE": "0"}, "MIXVAE_NATIVE=0"),
                        ({"CC": "false"}, "could not build mixture_lse.c")]:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            native.reset()
            assert native.library() is None and reason in native.unavailable
            torch.testing.assert_close(mixture_log_prob(z, torch.log_softmax(logits, -1), means, logvars), want)
    assert not list(tmp_path.glob("native/*.so"))         # nothing half-written is left behind
    native.reset()
    if native._compiler() is None:
        assert "no C compiler" in native.unavailable
        return
    assert native.library() is not None, native.unavailable
    assert len(list(tmp_path.glob("native/*.so"))) == 1
    native.reset()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("rebuilt although cached"))
    assert native.library() is not None
    native.reset()


def test_a_refused_flag_is_remembered_and_an_unwritable_cache_falls_back(tmp_path, monkeypatch):
    """A compiler that refuses -march=native is asked once per cache, not once per process; a
    cache folder that cannot be made is replaced by one in the temporary directory; temporary
    files a killed build left over an hour ago are removed."""
    native.reset()
    real = native._compiler()
    if real is None:
        pytest.skip("no C compiler here")
    log = tmp_path / "calls"
    cc = tmp_path / "cc"
    cc.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                  f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                  "sys.exit(1 if '-march=native' in sys.argv else subprocess.call([" + repr(real[0]) + "] + sys.argv[1:]))\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("MIXVAE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "native").mkdir(parents=True)
    old = tmp_path / "cache" / "native" / "tmpkilled.so"
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200,) * 2)
    assert native.library() is not None, native.unavailable
    assert len(log.read_text().splitlines()) == 2 and not old.exists()
    native.reset()
    assert native.library() is not None and len(log.read_text().splitlines()) == 2   # nothing compiled again
    native.reset()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MIXVAE_CACHE", str(tmp_path / "file"))    # ~/.cache cannot be made: a file is in the way
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert native.library() is not None, native.unavailable
    assert len(list((tmp_path / "tmp").glob("mixvae-*/native/*.so"))) == 1
    native.reset()


@pytest.mark.parametrize("seed", range(6))
def test_certified_rows_are_within_tol_of_float64_and_the_others_are_redone(kernel_calls, seed, monkeypatch):
    """Hard cases (log-variances from -12 to 8, means of scale 0.1 to 30, rows 0.1 to 10 standard
    deviations from a component, D = 1 ... 4). Rows whose estimated error (_direct_form_error) is
    at most 1e-4 nats keep the kernel's value, within 1e-4 nats of float64; the others are done
    again by the PyTorch path, within the accuracy suite's tolerance (1e-3 nats or 1e-5 of the
    value); the gradients within 1e-3 + 1e-5 of the largest entry everywhere. (Measured over 300
    such cases, and over 300 with K up to 4000 and means up to 1e3: errors at most 0.10 of the
    estimate.)"""
    from mixvae import distributions
    estimates = []
    estimate = distributions._direct_form_error
    monkeypatch.setattr(distributions, "_direct_form_error", lambda *a: estimates.append(estimate(*a)) or estimates[-1])
    g = torch.Generator().manual_seed(seed)
    kept = redone = 0
    for case in range(8):
        dim, k = 1 + case % 4, int(torch.randint(1, 80, (1,), generator=g))
        scale = 10 ** float(torch.empty(1).uniform_(-1, 1.5, generator=g))
        means = scale * torch.randn(k, dim, generator=g)
        logvars = torch.empty(k, dim).uniform_(-12, 8, generator=g)
        pick = torch.randint(k, (300,), generator=g)
        spread = torch.exp(0.5 * logvars[pick]) * 10 ** torch.empty(300, 1).uniform_(-1, 1, generator=g)
        z = means[pick] + spread * torch.randn(300, dim, generator=g)
        logits, cot = torch.randn(k, generator=g), torch.randn(300, generator=g)
        estimates.clear()
        out, grads = _value_and_grads(z, logits, means, logvars, cot)
        certified = estimates[0] <= 1e-4
        kept, redone = kept + int(certified.sum()), redone + int((~certified).sum())
        want, _, (g_z, g_m, g_l, g_logits) = reference(z, logits, means, logvars, cot)
        err = (out.double() - want).abs()
        assert (err[certified] <= 1e-4 + 1e-6 * want[certified].abs()).all()
        assert (err <= torch.clamp(1e-5 * want.abs(), min=1e-3)).all()
        for got, ref in zip(grads, (g_z, g_logits, g_m, g_l)):
            assert (got.double() - ref).abs().max() <= 1e-3 + 1e-5 * ref.abs().max()
    assert kept > 300 and redone > 0


def _kernel_in_child(queue, args):
    queue.put(float(native.mixture_lse_forward(*args).sum()))


def test_a_forked_child_can_use_the_threaded_kernel(kernel_calls):
    """The row split runs on a thread pool; a child forked after the parent started it (DataLoader
    workers, multiprocessing) has none of its threads and must make its own instead of waiting
    forever. (The child calls the kernel directly: after a two-thread parent, torch's own
    operations are not fork-safe either.)"""
    import multiprocessing
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(5000, 2, generator=g), torch.randn(64, 2, generator=g), torch.rand(64, 2, generator=g),
            torch.randn(64, generator=g))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = float(native.mixture_lse_forward(*args).sum())
        assert native._pool is not None
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_kernel_in_child, args=(queue, args))
        child.start()
        child.join(timeout=60)
    finally:
        torch.set_num_threads(previous)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's thread pool")
    assert child.exitcode == 0 and queue.get(timeout=5) == want


def test_mismatched_dtypes_and_shapes_are_not_served(kernel_calls):
    """Only float32 inputs of matching shapes reach the kernel; the rest behave as before (the
    PyTorch path refuses mixed dtypes and mismatched sizes)."""
    z, logits, means, logvars, _ = _inputs(20, 4, 2)
    lw = torch.log_softmax(logits, -1)
    with pytest.raises(RuntimeError):
        mixture_log_prob(z, lw.double(), means.double(), logvars.double())
    for bad in [(z[:, :1], lw, means, logvars), (z, lw, means, logvars[:, :1]), (z, lw[:3], means, logvars)]:
        with pytest.raises(RuntimeError):
            mixture_log_prob(*bad)
    assert kernel_calls == []


def test_overflowing_rows_and_tiny_variances_keep_finite_gradients(kernel_calls, monkeypatch):
    """A row whose every term overflows to -inf (done again by the PyTorch path) adds nothing to
    the other rows' gradients, which stay finite; variances whose 1/v overflows float32 are not
    served (the PyTorch path gives NaN there). Both as the PyTorch path gives them."""
    lw, m = torch.zeros(1), torch.zeros(1, 2)
    cases = [(torch.tensor([[0.0, 0.0], [1e3, 0.0]]), torch.tensor([[-80.0, 60.0]])),
             (torch.tensor([[0.0, 0.0], [1e-3, 0.0]]), torch.tensor([[-90.0, 0.0]]))]

    def grads(z, lv):
        ts = [t.clone().requires_grad_() for t in (lw, m, lv)]
        return torch.autograd.grad(mixture_log_prob(z, ts[0], ts[1], ts[2])[0], ts)

    fast = [grads(*c) for c in cases]
    assert kernel_calls == [(2, 2)]
    monkeypatch.setenv("MIXVAE_NATIVE", "0")
    native.reset()
    plain = [grads(*c) for c in cases]
    native.reset()
    assert all(torch.isfinite(g).all() for g in fast[0])
    for f, p in zip(fast, plain):
        for a, b in zip(f, p):
            torch.testing.assert_close(a, b, equal_nan=True)


def test_the_rows_gradient_from_the_forward_pass_is_finite_where_terms_vanish_or_overflow(kernel_calls):
    """Gradient to z only (a detached mixture): a term that underflows to 0 beside a huge 1/v adds
    0, not 0 x inf; a row whose terms are all -inf (done again by the PyTorch path) keeps the other
    rows' gradients finite. As the PyTorch path gives them."""
    lw = torch.log_softmax(torch.zeros(2), -1)
    m = torch.tensor([[100.0, 0.0], [0.0, 0.0]])
    lv = torch.tensor([[0.0, 0.0], [-85.0, 60.0]])
    z = torch.tensor([[100.0, 0.0], [99.0, 1.0], [1e4, 0.0]])

    def grad():
        zg = z.clone().requires_grad_()
        out = mixture_log_prob(zg, lw, m, lv)
        return torch.autograd.grad(out[:2].sum(), zg)[0]

    fast = grad()
    assert len(kernel_calls) == 1
    native.reset()
    native.unavailable = "compared without it"
    try:
        plain = grad()
    finally:
        native.reset()
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, plain)


def test_double_backward_through_the_kernel_is_refused(kernel_calls):
    z, logits, means, logvars, _ = _inputs(50, 4, 2)
    z.requires_grad_()
    (g,) = torch.autograd.grad(mixture_log_prob(z, torch.log_softmax(logits, -1), means, logvars).sum(), z,
                               create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
