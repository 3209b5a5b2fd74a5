"""Maps the top-level folders models/, kernels/ and configs/ into the single import root `zoo`.

pyproject.toml cannot express "every sub-package of a remapped folder", so the package list
is computed here; everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

REMAPPED = {"zoo.models": "models", "zoo.kernels": "kernels"}

packages = find_packages(include=["zoo", "zoo.*"])
for dotted, folder in REMAPPED.items():
    packages += [dotted + sub[len(folder) :] for sub in find_packages(include=[folder, folder + ".*"])]
packages.append("zoo.configs")

setup(
    packages=packages,
    package_dir={**REMAPPED, "zoo.configs": "configs"},
    package_data={"zoo.configs": ["*.yaml", "sizes/*.yaml"], "zoo": ["store/**/*"], "zoo.kernels.compiled": ["*.c", "*.h"]},
    include_package_data=True,
)
