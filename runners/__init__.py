"""Execution backends: they take compiled manifests and make them happen, holding no training
or storage logic themselves (every backend calls `scaling_db.training.execute.execute_run`)."""
