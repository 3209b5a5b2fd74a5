"""Maps the top-level folders models/, kernels/ and configs/ into the single import root `zoo`,
and ships the checkpoint manifest (store/manifest.json) as zoo/store/manifest.json: the weights
themselves stay out of the wheel (they come from a hub, see zoo.hub).

pyproject.toml cannot express "every sub-package of a remapped folder", so the package list
is computed here; everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

REMAPPED = {"zoo.models": "models", "zoo.kernels": "kernels"}

packages = find_packages(include=["zoo", "zoo.*"])
for dotted, folder in REMAPPED.items():
    packages += [dotted + sub[len(folder) :] for sub in find_packages(include=[folder, folder + ".*"])]
packages += ["zoo.configs", "zoo.store"]

setup(
    packages=packages,
    package_dir={**REMAPPED, "zoo.configs": "configs", "zoo.store": "store"},
    package_data={"zoo.configs": ["*.yaml", "sizes/*.yaml"], "zoo.store": ["manifest.json"], "zoo.kernels.compiled": ["*.c", "*.h"]},
    # only what package_data names: the store's weights must never ride along
    include_package_data=False,
)
