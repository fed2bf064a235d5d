"""cocdrive core: types, configs, planners, model, data. Imports nothing of sim_eval, export
or ros_nodes."""

__version__ = "0.1.0"
