"""The marimo app tests/browser/test_marimo.py opens with `marimo edit --headless`: the demo
inspection (through mo.ui.anywidget) and a NaN model (the Inspection itself), each as the one
anywidget (its tabs, trees, jump and detail)."""

import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo

    import inspector

    mo.md(f"inspector {inspector.__version__}")
    return (mo,)


@app.cell
def _(mo):
    from inspector.demo import demo_inspection

    insp = demo_inspection()
    demo = mo.ui.anywidget(insp.widget())  # marimo's own anywidget wrapper
    demo  # noqa: B018 - the cell's last expression is what marimo shows
    return (insp,)


@app.cell
def _():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import inspector as fi

    class LogNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4, name="d1")(x)
            x = jnp.log(nn.Dense(4, name="d2", kernel_init=nn.initializers.constant(-1.0))(jnp.abs(x) + 1))
            return nn.Dense(2, name="d3")(x)

    model, x = LogNet(), jnp.ones((2, 3))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    nan = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    nan  # noqa: B018 - an Inspection as the cell's value: displayed as the widget (views/display.py)
    return (nan,)


if __name__ == "__main__":
    app.run()
