"""Only what pyproject.toml cannot say: configs/ is installed as the package `cocdrive_configs`
so a wheel carries the shipped YAML defaults (planner/paths.py)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["planner", "planner.*", "sim_eval", "sim_eval.*"])
    + ["cocdrive_configs"],
    package_dir={"cocdrive_configs": "configs"},
)
