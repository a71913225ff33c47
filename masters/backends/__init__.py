"""Generation backends: the engines that sample the response bank (a component kind).

- ``specs``: built-in backend specs (``hf``), torch-free.
- ``hf``: transformers ``generate`` with the per-row Gumbel sampler (the reference rows).
- ``plugin``: registers the built-ins through ``masters_register_backends``.
"""
