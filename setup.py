"""Maps the top-level folders into the ``tzoo`` namespace: core/ -> tzoo.core, tasks/ -> tzoo.tasks,
and the example configs/ -> tzoo.configs (YAML data, so ``tzoo fit --task NAME`` works from a wheel).

Every subpackage is found, not listed by hand (a forgotten one would still import in an editable
install but be missing from the wheel); ``tests/test_packaging.py`` builds the wheel and checks it.
"""

from setuptools import find_namespace_packages, find_packages, setup

_CODE = {"core": "tzoo.core", "tasks": "tzoo.tasks"}
_DATA = {"configs": "tzoo.configs"}


def _mapping() -> dict[str, str]:
    package_dir = {}
    for roots, finder in ((_CODE, find_packages), (_DATA, find_namespace_packages)):
        for folder, name in roots.items():
            subs = [p for p in finder(where=folder) if "__pycache__" not in p]
            package_dir[name] = folder
            for sub in subs:
                package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return package_dir


package_dir = _mapping()
setup(packages=sorted(package_dir), package_dir=package_dir)
