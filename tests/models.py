"""Small flax models shared by the tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class AE(nn.Module):
    """Setup-defined submodules, extra methods, BatchNorm, a sow and a shared module."""

    def setup(self):
        self.enc = nn.Dense(3)
        self.dec = nn.Dense(5)
        self.bn = nn.BatchNorm(use_running_average=False)
        self.shared = nn.Dense(5)

    def encode(self, x):
        h = self.enc(x)
        self.sow("intermediates", "h", h)
        return h

    def decode(self, z):
        return self.bn(self.dec(z))

    def _private(self, x):
        return x * 2

    def describe(self):
        return "an autoencoder"

    def __call__(self, x):
        y = self.decode(self.encode(x))
        self.sow("intermediates", "h", y)
        return self.shared(self.shared(self._private(y)))


class MLP(nn.Module):
    """Compact Dense/Dropout layers and a ``train`` flag."""

    features: tuple = (8, 4)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for f in self.features[:-1]:
            x = nn.relu(nn.Dense(f)(x))
            x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.features[-1])(x)


class LogNet(nn.Module):
    """Produces a NaN in its second layer (log of a negative)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="d1")(x)
        x = jnp.log(nn.Dense(4, name="d2", kernel_init=nn.initializers.constant(-1.0))(jnp.abs(x) + 1))
        return nn.Dense(2, name="d3")(x)


def ae_setup():
    model = AE()
    x = jnp.linspace(-1, 1, 10).reshape(2, 5)
    variables = nn.init(lambda m, x: m(x), model, mutable=True)(jax.random.key(0), x)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    return model, variables, x


class Block(nn.Module):
    @nn.compact
    def __call__(self, c, _):
        h = nn.relu(nn.Dense(4)(c))
        return h, h.sum()


class ScanNet(nn.Module):
    """``nn.scan`` of :class:`Block`; without 'intermediates' in ``axes`` flax drops what the body captures."""

    axes: tuple = ("params",)

    @nn.compact
    def __call__(self, x):
        layers = nn.scan(Block, variable_axes={a: 0 for a in self.axes}, split_rngs={"params": True},
                         length=3)(name="layers")
        return layers(x, None)


class _SqrtAndInput(nn.Module):
    def __call__(self, x):
        return jnp.sqrt(x), x


class GradNaNNet(nn.Module):
    """Finite forward; ``sqrt`` at 0 makes a NaN in the backward pass of ``d1``'s output.
    ``root`` returns a tuple (two gradients for one call)."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="d1")(x)
        z, _ = _SqrtAndInput(name="root")(h * 0.0)
        return nn.Dense(2, name="d2")(z)


def grad_inspection():
    """``fi.inspect_grad`` of ``sum(GradNaNNet()(x))``: a NaN gradient born in the backward pass."""
    import inspector as fi

    model, x = GradNaNNet(), jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), x)
    return fi.inspect_grad(lambda m, x: jnp.sum(m(x)), model)(variables, x)
