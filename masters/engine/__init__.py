"""Stage plumbing shared by every pipeline stage: identity hashes, provenance, fault injection."""
