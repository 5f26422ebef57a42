"""Run configuration: the typed, validated keys Flower carries between processes."""
