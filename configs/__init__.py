"""The shipped YAML configs, installed as package data (see planner/paths.py)."""
