"""masters-llava-next: the ``llava_next`` VLM adapter for masters (LLaVA-NeXT / LLaVA-1.6).

Keep this module import-light: masters imports ``masters_llava_next.hooks`` (and so this package)
every time it lists or validates components; torch and transformers load only when a run builds
the adapter.
"""

__version__ = "0.1.0"
