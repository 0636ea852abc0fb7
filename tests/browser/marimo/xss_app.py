"""The marimo app of tests/browser/test_xss.py: an inspection of a model whose names, sown keys and
class names are markup, displayed as the widget (its text must stay text)."""

import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import jax
    import jax.numpy as jnp
    from test_xss import Evil  # tests/browser is on the server's PYTHONPATH

    import inspector as fi
    from inspector import capture as C

    model, x = Evil(), jnp.ones((2, 4))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=C.calls | C.methods("describe"))(
        variables, x)
    insp  # noqa: B018 - the cell's last expression is what marimo shows
    return


if __name__ == "__main__":
    app.run()
