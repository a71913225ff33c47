"""Teacher masking: maskers (which weights), and the runtime that moves between levels exactly."""
