"""pip install . — the vitq Python package (python/vitq) with its C++ core (src/python), built by
CMake from this source tree; no network. Needs what setup.sh installs (pybind11-dev, python3-dev,
the C++ dependencies) and setuptools + wheel (Debian python3-setuptools, python3-wheel):

    python3 -m venv --system-site-packages .venv && .venv/bin/pip install .

(--system-site-packages: numpy and Debian's setuptools/wheel come from the system; pip then
builds in this environment and fetches nothing.) VITQ_BUILD_DIR=<an existing vitq build
directory> installs the module built there instead of building again.
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "CMakeLists.txt")) as f:
        for line in f:
            if line.startswith("project(vitq VERSION "):
                return line.split()[2]
    raise RuntimeError("CMakeLists.txt: project(vitq VERSION ...) not found")


class BuildWithCMake(build_py):
    """Copies python/vitq and the compiled vitq/_vitq*.so (built by CMake) into the build tree."""

    def run(self):
        super().run()
        build_dir = os.environ.get("VITQ_BUILD_DIR")
        if not build_dir:
            build_dir = os.path.join(HERE, "build", "pip")
            subprocess.check_call(["cmake", "-S", HERE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                                   "-DVITQ_BUILD_TESTS=OFF", "-DVITQ_BUILD_BENCH=OFF",
                                   f"-DPython3_EXECUTABLE={sys.executable}"])
            subprocess.check_call(["cmake", "--build", build_dir, "--target", "vitq_python", "-j",
                                   str(os.cpu_count() or 1)])
        built = glob.glob(os.path.join(build_dir, "python", "vitq", "_vitq*.so"))
        if not built:
            raise RuntimeError(f"no python/vitq/_vitq*.so in {build_dir}: was the module built "
                               "(pybind11-dev and python3-dev installed)?")
        dest = os.path.join(self.build_lib, "vitq")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(built[0], dest)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):  # a platform wheel: the package holds a compiled module
        return True


setup(
    name="vitq",
    version=version(),
    description="Post-training quantization for Vision Transformers, calibrated and run in C++",
    packages=["vitq"],
    package_dir={"": "python"},
    python_requires=">=3.9",
    install_requires=["numpy"],
    cmdclass={"build_py": BuildWithCMake},
    distclass=BinaryDistribution,
    zip_safe=False,
)
