"""npas-keras: compiler-aware fine-grained structured pruning for tf_keras and TFLite.

`pip install .` builds the C++ delegate (delegate/CMakeLists.txt) with the system compiler and
ships libnpas_delegate.so inside the package (npas_keras/runtime/).
"""
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "libnpas_delegate.so"


class BuildWithDelegate(build_py):
    """Runs CMake on delegate/ and puts the shared library next to npas_keras.runtime."""

    def run(self):
        super().run()
        build_dir = os.path.join(ROOT, "build", "delegate")
        os.makedirs(build_dir, exist_ok=True)
        jobs = str(os.cpu_count() or 2)
        try:
            subprocess.check_call(["cmake", "-S", os.path.join(ROOT, "delegate"), "-B", build_dir,
                                   "-DCMAKE_BUILD_TYPE=Release"])
            subprocess.check_call(["cmake", "--build", build_dir, "--target", "npas_delegate",
                                   "-j", jobs])
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(f"npas-keras: building the delegate failed ({exc}); it needs cmake >= 3.16 "
                     "and a C++17 compiler (apt-get install cmake g++)")
        built = os.path.join(build_dir, LIB_NAME)
        targets = [os.path.join(self.build_lib, "npas_keras", "runtime")]
        if getattr(self, "editable_mode", False):
            targets.append(os.path.join(ROOT, "npas_keras", "runtime"))
        for target in targets:
            os.makedirs(target, exist_ok=True)
            # Copy then rename: processes that have the old library mapped keep their inode.
            tmp = os.path.join(target, LIB_NAME + ".tmp")
            shutil.copy2(built, tmp)
            os.replace(tmp, os.path.join(target, LIB_NAME))


setup(
    name="npas-keras",
    version="0.1.0",
    description="Fine-grained structured pruning for tf_keras with a sparse TFLite delegate",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["npas_keras", "npas_keras.*"]),
    package_data={"npas_keras.runtime": [LIB_NAME]},
    install_requires=[
        "numpy>=1.26,<2.3",
        "tensorflow>=2.21,<2.22",
        "tf_keras>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8,<0.9",
        "keras-tuner>=1.4.7,<1.5",
        "ai-edge-litert>=2.3,<2.4",
        "flatbuffers>=25.1",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100"]},
    entry_points={"console_scripts": ["npas=npas_keras.cli:main"]},
    cmdclass={"build_py": BuildWithDelegate},
)
