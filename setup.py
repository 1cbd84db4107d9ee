"""Package layout: sim/, hw/ and bitstreams/ are top-level folders (users asked for that layout)
but install as flightc.sim, flightc.hw and flightc.bitstreams, so no generic top-level name is claimed."""
from setuptools import find_packages, setup

MOUNTS = {"flightc": "flightc", "flightc.sim": "sim", "flightc.hw": "hw", "flightc.bitstreams": "bitstreams"}


def _packages() -> list[str]:
    found = []
    for name, folder in MOUNTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return found


setup(packages=_packages(), package_dir=MOUNTS)
