"""distrax interop: jaxnis bijectors and flows inside distrax, and import isolation."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.flows import RationalQuadraticSpline, make_flow


def test_importing_jaxnis_flows_does_not_import_distrax():
    code = ("import sys, jaxnis, jaxnis.flows; "
            "assert 'distrax' not in sys.modules, 'distrax imported'; "
            "assert 'tensorflow_probability' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _flow_and_params():
    flow = make_flow(2, hidden=(8,), n_bins=4)
    params = flow.init(jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys, strict=True)])
    return flow, params


def test_spline_as_distrax_bijector_is_batch_polymorphic():
    import distrax

    from jaxnis.flows.distrax_interop import as_distrax_bijector

    spline = RationalQuadraticSpline(n_bins=4)
    raw = 0.5 * jax.random.normal(jax.random.key(2), (3, spline.n_params))
    bij = as_distrax_bijector(spline, raw, dim=3)
    assert isinstance(bij, distrax.Bijector)
    x = jax.random.uniform(jax.random.key(3), (2, 5, 3))
    y, ld = bij.forward_and_log_det(x)
    assert y.shape == (2, 5, 3) and ld.shape == (2, 5)
    y_ref, ld_ref = jax.vmap(spline.forward_and_log_det, (None, 0))(raw, x.reshape(10, 3))
    np.testing.assert_allclose(y.reshape(10, 3), y_ref, rtol=1e-6)
    np.testing.assert_allclose(ld.reshape(10), ld_ref, rtol=1e-6, atol=1e-6)
    x_back, ld_i = bij.inverse_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(ld + ld_i, 0.0, atol=2e-5)
    # Composes with distrax's own bijectors: log-dets add up.
    chain = distrax.Chain([bij, bij])
    _, ld2 = chain.forward_and_log_det(x)
    y1, ld1 = bij.forward_and_log_det(x)
    np.testing.assert_allclose(ld2, ld1 + bij.forward_and_log_det(y1)[1], rtol=1e-5, atol=1e-5)


def test_flow_in_distrax_transformed_and_as_distribution():
    import distrax

    from jaxnis.flows.distrax_interop import as_distrax_bijector, as_distrax_distribution

    flow, params = _flow_and_params()
    base = distrax.Independent(distrax.Uniform(jnp.zeros(2), jnp.ones(2)), 1)
    transformed = distrax.Transformed(base, as_distrax_bijector(flow, params))
    dist = as_distrax_distribution(flow, params)
    assert dist.event_shape == (2,)
    x, log_q = dist.sample_and_log_prob(seed=jax.random.key(4), sample_shape=(4, 8))
    assert x.shape == (4, 8, 2) and log_q.shape == (4, 8)
    # Transformed.log_prob = base log-density at the preimage minus the forward log-det.
    np.testing.assert_allclose(transformed.log_prob(x), log_q, atol=2e-5)
    np.testing.assert_allclose(dist.log_prob(x), log_q, atol=2e-5)
    log_q_ref = jax.vmap(flow.log_prob, (None, 0))(params, x.reshape(32, 2))
    np.testing.assert_allclose(dist.log_prob(x).reshape(32), log_q_ref, rtol=1e-6, atol=1e-6)
    # Sampling through distrax gives points of the same distribution (same map of U[0,1]^d).
    xt = transformed.sample(seed=jax.random.key(5), sample_shape=(16,))
    assert xt.shape == (16, 2) and np.all((xt >= 0) & (xt <= 1))
