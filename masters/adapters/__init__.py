"""VLM adapters: one per model family; everything the engine does with a model goes through one."""
