"""The baselines, one module each; importing the package registers them."""

from baselines import grad_ascent

__all__ = ["grad_ascent"]
