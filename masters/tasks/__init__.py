"""Tasks (data sources): a component kind that builds the train, validation and test splits.

- ``specs``: built-in task specs (``shapes``, ``llava_json``, ``hf_datasets``), torch-free.
- ``builtin``: their implementations (``splits()``).
- ``shapes``: the synthetic shapes VQA generator; ``loaders``: LLaVA JSON and ``datasets`` tables.
- ``plugin``: registers the built-ins through ``masters_register_tasks``.
"""
