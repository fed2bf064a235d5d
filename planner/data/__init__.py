"""Data: the training/evaluation sample type, dataset shards, and real-log loaders."""
