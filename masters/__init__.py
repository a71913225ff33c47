"""masters: distil large vision-language models into small ones with the Masters method.

The package root stays import-light: listing, describing and validating components must not
import torch or transformers (see ``benchmarks/cli_startup.py``).
"""

__version__ = "0.1.0"

from masters.hookspecs import hookimpl  # noqa: E402  (re-exported for plugin authors)

__all__ = ["__version__", "hookimpl"]
