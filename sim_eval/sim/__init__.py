"""Simulator adapters: every one turns its world into `Scene`s in the project's conventions."""
