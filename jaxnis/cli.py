"""The ``jaxnis`` command.

``jaxnis demo`` runs a short tour that prints every Monte Carlo number next to its analytic
reference: phase-space volumes from RAMBO on diet, the e+e- -> mu+mu- cross section at the Z
pole by neural importance sampling, its derivative with respect to M_Z by automatic
differentiation, and multi-channel Drell-Yan production with a Z and a Z'.
"""

from __future__ import annotations

import argparse
import time


def _line(label: str, value: float, error: float, reference: float | None, unit: str) -> str:
    text = f"  {label:<34s} {value:>14.7g} +- {error:<10.3g} {unit}"
    if reference is not None:
        pull = (value - reference) / error if error > 0 else float("nan")
        text += f"   reference {reference:.8g}  (pull {pull:+.2f})"
    return text


def _volume(ps, cond, key, n: int, dtype) -> tuple[float, float]:
    """Mean phase-space weight of ``n`` events of ``ps`` and its error. The massless weight
    is the volume itself, the same for every event up to rounding: its error is then that
    of the working precision (a few units in the last place measured, 16 allowed), not the
    spread of identical numbers."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    r = jax.random.uniform(key, (n, ps.n_random), dtype)
    _, log_w = jax.jit(jax.vmap(ps.forward, in_axes=(0, None)))(r, cond)
    w = np.exp(np.asarray(log_w, dtype=np.float64))
    rounding = 16 * float(jnp.finfo(dtype).eps) * abs(w.mean())
    return float(w.mean()), max(float(w.std(ddof=1) / np.sqrt(w.size)), rounding)


def demo(*, quick: bool = False, seed: int = 0) -> int:
    """Run the built-in demo; returns a process exit status."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnis.integrate import Integrator
    from jaxnis.phasespace import RamboOnDiet
    from jaxnis.physics.processes import DrellYan, EEToFFbar

    start = time.perf_counter()
    key = jax.random.key(seed)
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    print(f"jaxnis demo on {jax.devices()[0].platform} ({jnp.dtype(dtype).name})\n")

    # 1. Phase space: the mean weight of RAMBO on diet is the phase-space volume.
    print("1. Phase-space volumes, RAMBO on diet (REFERENCES.md)")
    n_ev = 20_000 if quick else 200_000
    cases = [("4 massless, sqrt(s) = 1000 GeV", 4, None, 132965.64302788844),
             ("t tbar g (173, 173, 0), 1000 GeV", 3, [173.0, 173.0, 0.0], 74.856206)]
    for label, n, masses, ref in cases:
        ps = RamboOnDiet(n, massive=masses is not None)
        cond = {"sqrt_s": jnp.asarray(1000.0, dtype)}
        if masses is not None:
            cond["masses"] = jnp.asarray(masses, dtype)
        key, sub = jax.random.split(key)
        print(_line(label, *_volume(ps, cond, sub, n_ev, dtype), ref, "GeV^(2n-4)"))

    # 2. e+e- -> mu+mu- at the Z pole: neural importance sampling and d sigma / d M_Z.
    print("\n2. e+e- -> mu+mu- (photon + Z) at sqrt(s) = 91.188 GeV")
    proc = EEToFFbar("mu")
    params = proc.default_params(dtype, sqrt_s=91.188)
    integrator = Integrator(proc.multichannel(), theta=params, batch_size=1024,
                            flow={"n_bins": 8, "hidden": (16, 16)}, progress=False)
    key, sub = jax.random.split(key)
    res = integrator.integrate(sub, n_survey=20 if quick else 60, n_refine=5)
    print(_line("sigma (flow, survey + refine)", res.value, res.error, 2099.2653903, "pb"))
    print(f"  {'unweighting efficiency':<34s} {res.unweighting_efficiency:>14.3f}")

    key, sub = jax.random.split(key)
    r = jax.random.uniform(sub, (n_ev, proc.dim), dtype)
    per_event = jax.jit(jax.vmap(jax.grad(lambda th, ri: proc.integrand(ri, th)),
                                 in_axes=(None, 0)))(params, r)
    g = np.asarray(per_event["M_Z"], dtype=np.float64)
    print(_line("d sigma / d M_Z (autodiff)", g.mean(), g.std(ddof=1) / np.sqrt(g.size),
                67.755083, "pb/GeV"))

    # 3. Drell-Yan with photon, Z and Z': three channels, learned channel weights.
    print("\n3. p p -> l+ l- at 13 TeV through photon, Z and Z' (toy PDF), three channels")
    dy = DrellYan()
    dy_params = dy.default_params(dtype)
    integrator = Integrator(dy.multichannel(), theta=dy_params, batch_size=2048,
                            flow={"n_bins": 8, "hidden": (16, 16)}, progress=False)
    key, sub = jax.random.split(key)
    res = integrator.integrate(sub, n_survey=20 if quick else 80, n_refine=5)
    reference = float(jax.jit(dy.reference_sigma)(dy_params))  # quadrature, no lepton cuts
    print(_line("sigma (m_ll > 60 GeV)", res.value, res.error, reference, "pb"))
    for name, value in zip(dy.channel_names, res.channel_value, strict=True):
        print(f"    channel {name:<26s} {float(value):>14.6g} pb")
    print(f"  {'chi2/dof, unweighting efficiency':<34s} {res.chi2_dof:>14.3f} "
          f"{res.unweighting_efficiency:.3f}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxnis", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the built-in demo")
    p_demo.add_argument("--quick", action="store_true", help="smaller samples")
    p_demo.add_argument("--seed", type=int, default=0,
                        help="integer seed of every random draw (default: 0)")
    p_demo.add_argument("--float32", action="store_true",
                        help="run in single precision (default: float64)")
    p_demo.add_argument("--no-cache", action="store_true",
                        help="do not keep compiled programs on disk for the next run "
                             "(default: jaxnis.compile_cache.default_cache_dir(), or "
                             "$JAXNIS_CACHE_DIR)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        import jax

        from jaxnis.host_memory import reuse_freed_memory

        # before the first computation; see jaxnis.host_memory
        for name, value in reuse_freed_memory().items():
            jax.config.update(name, value)
        jax.config.update("jax_enable_x64", not args.float32)
        if not args.no_cache:
            from jaxnis.compile_cache import cache_options

            options = cache_options()
            for name, value in options.items():
                jax.config.update(name, value)
            print(f"compiled programs cached in {options['jax_compilation_cache_dir']}")
        return demo(quick=args.quick, seed=args.seed)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
