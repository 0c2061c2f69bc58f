"""Package discovery (the metadata is in pyproject.toml): every ``lever_plugins`` package is found, none listed
by hand, and ``lever_cli`` is the folder ``cli/``. tests/test_packaging.py checks the wheel has them all."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["lever_plugins", "lever_plugins.*"]), "lever_cli"],
    package_dir={"lever_cli": "cli"},
)
