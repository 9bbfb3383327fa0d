"""The baselines, one module each; importing the package registers them."""

from baselines import dpo, grad_ascent, grad_diff, idk, kl, npo, prompt, simnpo, whp

__all__ = ["dpo", "grad_ascent", "grad_diff", "idk", "kl", "npo", "prompt", "simnpo", "whp"]
