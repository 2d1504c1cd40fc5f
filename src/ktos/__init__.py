"""ktos: KTO and sign-corrected KTO-S trained from a base model with no SFT, on TRL."""

__version__ = "0.1.0"
