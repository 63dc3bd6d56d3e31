"""Flow files: loading with positions, schema, graph validation and the engine."""
