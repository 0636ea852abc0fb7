"""A small encoder/decoder (BatchNorm, Dropout, sow) and ``python -m inspector.demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

import inspector as fi
from inspector import capture as C


class Encoder(nn.Module):
    features: tuple[int, ...] = (32, 16)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for f in self.features:
            x = nn.Dense(f)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.Dropout(0.1, deterministic=not train)(x)
        self.sow("intermediates", "code_norm", jnp.linalg.norm(x, axis=-1))
        return x


class Decoder(nn.Module):
    features: tuple[int, ...] = (32, 8)

    @nn.compact
    def __call__(self, z):
        for f in self.features[:-1]:
            z = nn.relu(nn.Dense(f)(z))
        return nn.Dense(self.features[-1])(z)


class AutoEncoder(nn.Module):
    """The demo model: ``decode(encode(x))`` with ``encode``/``decode`` as methods."""

    def setup(self):
        self.encoder = Encoder()
        self.decoder = Decoder()

    def encode(self, x, train: bool = False):
        return self.encoder(x, train)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x, train: bool = False):
        return self.decode(self.encode(x, train))


def demo_inputs(batch: int = 4, features: int = 8):
    """``(model, variables, x)`` for the demo, deterministically initialised."""
    model = AutoEncoder()
    x = jax.random.normal(jax.random.key(0), (batch, features))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(1), x)
    return model, variables, x


def demo_inspection(train: bool = True) -> fi.Inspection:
    """One training-mode step of the demo, capturing encode/decode and every Dense."""
    model, variables, x = demo_inputs()
    run = fi.inspect_apply(lambda m, x, train: m.decode(m.encode(x, train)), model,
                           mutable=["batch_stats"],
                           capture_intermediates=C.methods("encode", "decode") | C.types(nn.Dense))
    return run(variables, x, train, rngs={"dropout": jax.random.key(2)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Inspect the bundled demo model.")
    parser.add_argument("--html", default="demo_output/demo.html", help="where to write the static HTML")
    args = parser.parse_args(argv)
    insp = demo_inspection()
    from inspector.views.terminal import print_inspection

    print_inspection(insp)
    out = Path(args.html)
    out.parent.mkdir(parents=True, exist_ok=True)
    insp.to_html(out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes); open it in a browser, no kernel needed")


if __name__ == "__main__":
    main()
