"""Inspections across processes: 2 processes x 2 CPU devices (``jax.distributed``, gloo
collectives, coordinator on loopback), global arrays over the 4 devices. Each worker writes
what ``inspect``, ``fi.apply``, the mutation diffs, ``fi.compare`` and ``fi.watch`` found (and
the global arrays, gathered) as JSON; the test checks them against numpy in float64."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

WORKER = textwrap.dedent('''
    import faulthandler, json, sys
    faulthandler.dump_traceback_later(220, exit=True)  # a hang shows where, before the test gives up
    pid, port, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    import flax.linen as nn, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import inspector as fi
    from inspector import capture as C
    from inspector.model import SpansProcessesError
    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    # rows are processes: "data" spans them, "model" stays within one
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=True):
            self.variable("extra", "spikes", lambda: jnp.zeros(8))  # read, unused: NaN and Inf counts
            h = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
            return nn.Dense(4)(nn.relu(h))

    def put(a, spec):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec), lambda i: a[i])

    raw = {k: np.asarray(v) for k, v in np.load(sys.argv[4]).items()}
    specs = {"x": P("data", None), "k0": P(None, "model"), "b0": P("data"), "scale": P(), "bias": P(),
             "k1": P("data", "model"), "b1": P(), "mean": P("data"), "var": P("data"), "spikes": P("data")}
    g = {k: put(raw[k], s) for k, s in specs.items()}
    x = g["x"]
    v = {"params": {"Dense_0": {"kernel": g["k0"], "bias": g["b0"]},
                    "BatchNorm_0": {"scale": g["scale"], "bias": g["bias"]},
                    "Dense_1": {"kernel": g["k1"], "bias": g["b1"]}},
         "batch_stats": {"BatchNorm_0": {"mean": g["mean"], "var": g["var"]}},
         "extra": {"spikes": g["spikes"]}}
    out = {"pid": pid}
    gathered = out["gathered"] = {}

    def stats(s):
        return None if s is None else {f: getattr(s, f) for f in (
            "count", "mean", "std", "min", "max", "abs_max", "zeros", "nan", "posinf", "neginf")}

    def described(insp):
        got = {"output": stats(insp["output"].stats)}
        got.update({"/".join(l.path): stats(l.stats) for l in insp.variables.leaves()})
        got.update({c.key: stats(c.outputs[0].stats) for c in insp.calls})
        return got

    def gather_all(insp, tag):  # collective: both processes, same leaves, same order
        gathered[f"{tag}/output"] = insp["output"].gather().tolist()
        for c in insp.calls:
            gathered[f"{tag}/{c.key}"] = c.outputs[0].gather().tolist()

    flt = C.types(nn.Dense) | C.types(nn.BatchNorm)
    train = fi.inspect_apply(lambda m, x: m(x), Net(), mutable=["batch_stats"], capture_intermediates=flt)(v, x)
    evaluation = fi.inspect_apply(lambda m, x: m(x, train=False), Net(), mutable=["batch_stats"],
                                  capture_intermediates=flt)(v, x)
    out["inspect"] = described(train)
    out["inspect_eval"] = described(evaluation)
    out["diffs"] = {d.key: [d.status, d.changed, d.max_abs, d.mean_abs, stats(d.after.stats)]
                    for diff in train.diffs for d in diff.leaves}
    out["compare"] = {d.key: [d.status, d.changed, d.max_abs, d.mean_abs] for d in fi.compare(train, evaluation).deltas}

    # .value: read locally where this process holds all of an array, else a clear error naming the leaf
    out["kernel_value"] = train["params/Dense_0/kernel"].value.tolist()
    try:
        train["Dense_0:__call__"].value
        out["value_error"] = None
    except SpansProcessesError as e:
        out["value_error"] = str(e)
    gather_all(train, "train")
    gather_all(evaluation, "eval")
    out["value_after_gather"] = train["Dense_0:__call__"].value.tolist()
    out["preview_after_gather"] = train["Dense_0:__call__"].preview((slice(0, 2),)).tolist()
    state = train.state["batch_stats"]["BatchNorm_0"]
    gathered["state/mean"] = multihost_utils.process_allgather(state["mean"], tiled=True).tolist()
    gathered["state/var"] = multihost_utils.process_allgather(state["var"], tiled=True).tolist()

    # fi.apply is a drop-in: flax's result, and the inspection's output and state
    y, new = fi.apply(lambda m, x: m(x), Net(), mutable=["batch_stats"])(v, x)
    fy, fnew = jax.jit(lambda v, x: Net().apply(v, x, mutable=["batch_stats"]))(v, x)
    ga = multihost_utils.process_allgather
    out["apply"] = {
        "types": [type(new).__name__, type(fnew).__name__, sorted(new), sorted(fnew)],
        "vs_flax": float(np.max(np.abs(ga(y, tiled=True) - ga(fy, tiled=True)))),
        "vs_inspection": float(np.max(np.abs(ga(y, tiled=True) - np.asarray(gathered["train/output"])))),
        "state_vs_flax": max(float(np.max(np.abs(ga(new["batch_stats"]["BatchNorm_0"][k], tiled=True)
                                                 - ga(fnew["batch_stats"]["BatchNorm_0"][k], tiled=True))))
                             for k in ("mean", "var")),
        "y_sharding": str(y.sharding.spec),
    }

    # views: process 0 displays, the others a one-line note; text is data, on every process
    bundle = train._repr_mimebundle_()
    out["views"] = {"bundle_keys": sorted(bundle), "plain": bundle["text/plain"],
                    "rich": type(train.__rich__()).__name__,
                    "compare_bundle_keys": sorted(fi.compare(train, evaluation)._repr_mimebundle_()),
                    "text": train.to_text().splitlines()[1:]}

    # fi.watch in a jitted, sharded train step: every process records every recorded step
    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense), every=2)

    @jax.jit
    def train_step(params, rest, x, step):  # global arrays are arguments: jax refuses to close over them
        def loss(p):
            y, _ = watch.at(step).apply({**rest, "params": p}, x, mutable=["batch_stats"])
            return jnp.mean(y ** 2)
        grads = jax.grad(loss)(params)
        watch.step(step, params=params, grads=grads)
        return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), grads

    params = v["params"]
    flat = lambda t: {"/".join(k.key for k in path): np.asarray(ga(a, tiled=True)).tolist()
                      for path, a in jax.tree_util.tree_flatten_with_path(t)[0]}
    out["watch_params"], out["watch_grads"] = {}, {}
    for step in range(3):
        out["watch_params"][step] = flat(params)
        params, grads = train_step(params, {k: c for k, c in v.items() if k != "params"}, x,
                                   jnp.asarray(step, jnp.int32))
        out["watch_grads"][step] = flat(grads)
    history = watch.history
    out["watch"] = [[s, site.kind, site.name, sc.mean, sc.std, sc.abs_max, sc.norm, sc.zero_frac, sc.nan, sc.inf,
                     sc.ratio, sc.count, sc.applications] for s, site, sc in history.rows()]

    # a gather that one process alone calls fails with a clear error instead of hanging
    if pid == 0:
        try:
            evaluation["Dense_0:__call__"].gather(timeout=3)
            out["lone_gather"] = None
        except TimeoutError as e:
            out["lone_gather"] = str(e)
    multihost_utils.sync_global_devices("inspector-test-end")
    with open(out_path, "w") as f:
        json.dump(out, f)
    print("ok")
''')


def _inputs(path):
    """The global arrays every worker shards, from a fixed seed."""
    rng = np.random.default_rng(7)
    f32 = np.float32
    raw = {"x": rng.normal(1.0, 2.0, (8, 6)).astype(f32), "k0": rng.normal(0, 0.5, (6, 8)).astype(f32),
           "b0": rng.normal(0, 0.1, 8).astype(f32), "scale": rng.uniform(0.5, 1.5, 8).astype(f32),
           "bias": rng.normal(0, 0.1, 8).astype(f32), "k1": rng.normal(0, 0.5, (8, 4)).astype(f32),
           "b1": np.zeros(4, f32), "mean": rng.normal(0, 0.1, 8).astype(f32),
           "var": rng.uniform(0.5, 1.5, 8).astype(f32),
           "spikes": np.array([1, np.nan, 0, np.inf, -np.inf, 0, 2.5, np.nan], f32)}
    raw["x"][5, 2] = 0.0
    np.savez(path, **raw)
    return raw


def _forward(raw, train):
    """Net in float64: Dense_0, BatchNorm_0, Dense_1 outputs and the new batch_stats."""
    x = raw["x"].astype(np.float64)
    d0 = x @ raw["k0"] + raw["b0"]
    if train:
        mu, var = d0.mean(0), d0.var(0)
    else:
        mu, var = raw["mean"].astype(np.float64), raw["var"].astype(np.float64)
    bn = (d0 - mu) / np.sqrt(var + 1e-5) * raw["scale"] + raw["bias"]
    d1 = np.maximum(bn, 0) @ raw["k1"] + raw["b1"]
    new_mean = 0.99 * raw["mean"] + 0.01 * d0.mean(0) if train else raw["mean"]
    new_var = 0.99 * raw["var"] + 0.01 * d0.var(0) if train else raw["var"]
    return {"Dense_0:__call__[0]": d0, "BatchNorm_0:__call__[0]": bn, "Dense_1:__call__[0]": d1,
            "output": d1, "mean": new_mean, "var": new_var}


def _check_stats(got, a, key):
    """Statistics of the held values ``a`` (float64 numpy) per the README's tolerances."""
    a = np.asarray(a, np.float64)
    fin = a[np.isfinite(a)]
    assert got["count"] == a.size, key
    assert (got["nan"], got["posinf"], got["neginf"]) == (np.isnan(a).sum(), (a == np.inf).sum(),
                                                         (a == -np.inf).sum()), key
    assert got["zeros"] == (a == 0).sum(), key
    assert (got["min"], got["max"], got["abs_max"]) == (fin.min(), fin.max(), np.abs(fin).max()), key
    tol = 2e-5 * (abs(fin.mean()) + fin.std())
    assert abs(got["mean"] - fin.mean()) <= tol and abs(got["std"] - fin.std()) <= tol, (key, got, fin.mean())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(tmp_path, inputs):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(tmp_path / f"out{i}.json"),
                               str(inputs)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    deadline = time.monotonic() + 240
    outputs: list[tuple[str, str]] = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs[len(outputs):]:
            p.kill()
            outputs.append(p.communicate())
    logs = "\n".join(f"--- worker {i} (rc {p.returncode}) ---\n{o[0][-2000:]}{o[1][-6000:]}"
                     for i, (p, o) in enumerate(zip(procs, outputs)))
    if any(p.returncode != 0 for p in procs):
        print(logs)
        pytest.fail(f"a worker failed or timed out (240 s):\n{logs}")
    return [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]


def test_inspections_across_two_processes(tmp_path):
    raw = _inputs(tmp_path / "inputs.npz")
    _check(raw, *_run_workers(tmp_path, tmp_path / "inputs.npz"))


def _check(raw, w0, w1):
    train, evaluation = _forward(raw, True), _forward(raw, False)

    for w in (w0, w1):
        g = {k: np.asarray(v) for k, v in w["gathered"].items()}
        # the gathered global arrays are the model's (float32 against float64)
        for tag, ref in (("train", train), ("eval", evaluation)):
            for key in ("output", "Dense_0:__call__[0]", "BatchNorm_0:__call__[0]", "Dense_1:__call__[0]"):
                np.testing.assert_allclose(g[f"{tag}/{key}"], ref[key], rtol=1e-4, atol=1e-4, err_msg=key)
        np.testing.assert_allclose(g["state/mean"], train["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g["state/var"], train["var"], rtol=1e-5, atol=1e-6)

        # inspect: every statistic of the global arrays, on every process
        got = w["inspect"]
        held = {"params/Dense_0/kernel": raw["k0"], "params/Dense_0/bias": raw["b0"],
                "params/BatchNorm_0/scale": raw["scale"], "params/BatchNorm_0/bias": raw["bias"],
                "params/Dense_1/kernel": raw["k1"], "params/Dense_1/bias": raw["b1"],
                "batch_stats/BatchNorm_0/mean": raw["mean"], "batch_stats/BatchNorm_0/var": raw["var"],
                "extra/spikes": raw["spikes"]}
        for key, a in held.items():
            _check_stats(got[key], a, key)
        for tag, insp in (("train", got), ("eval", w["inspect_eval"])):
            _check_stats(insp["output"], g[f"{tag}/output"], f"{tag} output")
            for key in ("Dense_0:__call__[0]", "BatchNorm_0:__call__[0]", "Dense_1:__call__[0]"):
                _check_stats(insp[key], g[f"{tag}/{key}"], f"{tag} {key}")
        assert got["extra/spikes"]["nan"] == 2 and got["extra/spikes"]["posinf"] == 1

        # mutation diffs: the global before/after
        for name in ("mean", "var"):
            status, changed, max_abs, mean_abs, after = w["diffs"][f"batch_stats/BatchNorm_0/{name}"]
            before, now = raw[name].astype(np.float64), g[f"state/{name}"]
            delta = np.abs(now - before)
            assert status == "changed" and changed == np.sum(now != raw[name]), (name, changed)
            assert abs(max_abs - delta.max()) <= 1e-6 * delta.max(), (name, max_abs)
            assert abs(mean_abs - delta.mean()) <= 2e-5 * delta.max(), (name, mean_abs)
            _check_stats(after, now, f"diff {name}")

        # compare(train, eval): element-wise deltas of the global arrays
        for key in ("output", "Dense_1:__call__[0]", "BatchNorm_0:__call__[0]"):
            status, changed, max_abs, mean_abs = w["compare"][key]
            a, b = g[f"train/{key}"], g[f"eval/{key}"]
            delta = np.abs(b - a)
            assert status == "differs" and changed == np.sum(a != b), key
            assert abs(max_abs - delta.max()) <= 1e-6 * delta.max(), key
            assert abs(mean_abs - delta.mean()) <= 2e-5 * delta.max(), key
        assert w["compare"]["Dense_0:__call__[0]"][:2] == ["equal", 0]
        assert w["compare"]["params/Dense_1/kernel"][:2] == ["equal", 0]

        # .value: local where this process holds it all; a clear error where it does not; gather
        assert np.array_equal(np.asarray(w["kernel_value"], np.float32), raw["k0"])
        err = w["value_error"]
        assert err and "'Dense_0/__call__" in err and "leaf.gather()" in err and "every process" in err, err
        assert np.array_equal(w["value_after_gather"], g["train/Dense_0:__call__[0]"])
        assert np.array_equal(w["preview_after_gather"], g["train/Dense_0:__call__[0]"][:2])

        # fi.apply: flax's result (a plain dict of collections), the inspection's output
        a = w["apply"]
        assert a["types"][0] == a["types"][1] and a["types"][2] == a["types"][3] == ["batch_stats"], a
        assert a["vs_flax"] <= 1e-6 and a["vs_inspection"] == 0 and a["state_vs_flax"] <= 1e-6, a

        # fi.watch: every process recorded steps 0 and 2 (every=2), each against numpy
        rows = w["watch"]
        assert sorted({r[0] for r in rows}) == [0, 2], rows
        by = {(r[0], r[1], r[2]): r[3:] for r in rows}
        assert {k for k, _, _ in by} == {0, 2} and len(by) == len(rows)
        # each process recorded each emit once (not once per local device)
        assert all(r[-1] == 1 for r in rows), rows
        for (step, kind, name), (mean, std, abs_max, norm, zero_frac, nan, inf, ratio, count, _) in by.items():
            if kind == "activation":
                continue  # below, from the step's own parameters
            arr = np.asarray((w["watch_params"] if kind == "param" else w["watch_grads"])[str(step)][name])
            assert count == arr.size, (step, kind, name, count)
            fin = arr[np.isfinite(arr)]
            tol = 2e-5 * (abs(fin.mean()) + fin.std())
            assert abs(mean - fin.mean()) <= tol and abs(std - fin.std()) <= tol, (step, kind, name)
            assert abs_max == np.abs(fin).max() and nan == 0 and inf == 0, (step, kind, name)
            assert abs(norm - np.linalg.norm(fin)) <= 2e-5 * np.linalg.norm(fin) + 1e-30, (step, kind, name)
            assert zero_frac == np.mean(arr == 0), (step, kind, name)
            if kind == "grad":
                pn = np.linalg.norm(np.asarray(w["watch_params"][str(step)][name]))
                if pn == 0:  # undefined
                    assert ratio is None, (step, name)
                else:
                    assert abs(ratio - np.linalg.norm(fin) / pn) <= 4e-5 * np.linalg.norm(fin) / pn, (step, name)
        step0 = {k: np.asarray(v) for k, v in w["watch_params"]["0"].items()}
        ref = _forward({**raw, "k0": step0["Dense_0/kernel"], "b0": step0["Dense_0/bias"]}, True)
        for name in ("Dense_0:__call__[0]", "Dense_1:__call__[0]"):
            mean, std, abs_max = by[(0, "activation", name)][:3]
            a = ref[name]
            assert abs(mean - a.mean()) <= 1e-4 * (abs(a.mean()) + a.std()), name  # float32 forward vs float64
            assert abs(std - a.std()) <= 1e-4 * (abs(a.mean()) + a.std()), name
            assert by[(0, "activation", name)][8] == a.size, name  # the global array's elements
            assert abs(abs_max - np.abs(a).max()) <= 1e-4 * np.abs(a).max(), name

        # text is data: the same on every process (the first line holds timings)
        assert w["views"]["text"] == w0["views"]["text"]

    # process 0 displays everything; process 1 a one-line note
    assert "text/html" in w0["views"]["bundle_keys"] and "text/html" in w0["views"]["compare_bundle_keys"]
    assert w1["views"]["bundle_keys"] == w1["views"]["compare_bundle_keys"] == ["text/plain"]
    assert "displayed by process 0" in w1["views"]["plain"] and "\n" not in w1["views"]["plain"]
    assert w0["views"]["rich"] != "Text" and w1["views"]["rich"] == "Text"
    # every process found the same statistics
    assert w0["inspect"] == w1["inspect"] and w0["compare"] == w1["compare"] and w0["watch"] == w1["watch"]
    # a gather only process 0 called: a clear error naming the leaf, not a hang
    lone = w0["lone_gather"]
    assert lone and "'Dense_0/__call__" in lone and "every process" in lone, lone
