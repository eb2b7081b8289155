"""ament_python package: installable with pip (development) and `colcon build` (robots)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "rs_guard_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={PACKAGE: ["models/*/*", "sim/assets/*", "oracles/data/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/gazebo", glob("config/gazebo/*")),
        (f"share/{PACKAGE}/config/scenarios", glob("config/scenarios/*.yaml")),
        # twist_mux / collision_monitor / SROS2 examples for a real velocity chain (docs/robot.md)
        (f"share/{PACKAGE}/config/robot_chain", glob("config/robot_chain/*.*")),
    ],
    # 3.10: Humble and JetPack 6; 3.12: Jazzy and Kilted (Ubuntu 24.04).
    python_requires=">=3.10",
    # Loose ranges on purpose: they must resolve on Python 3.10 (the dev pins of
    # requirements-dev.txt do not) and leave a robot's own torch alone: a CUDA desktop build
    # (2.x+cu12x) or NVIDIA's JetPack wheel (2.xa0+nv..., a pre-release pip accepts when it
    # is installed) satisfies torch>=2.1,<3, so pip keeps it. A robot installs the ranges of
    # requirements-robot.txt (NumPy < 2 for ROS 2's apt packages); see docs/install.md.
    install_requires=["setuptools", "numpy>=1.24", "scipy>=1.11", "pyyaml>=6", "torch>=2.1,<3"],
    extras_require={
        # from_pretrained(dtype=...) needs transformers >= 4.56
        "models": ["transformers>=4.56", "safetensors>=0.4.3", "tokenizers>=0.19"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        "sim": ["mujoco>=3.1", "matplotlib>=3.7", "opencv-python-headless>=4.8", "tqdm>=4.60"],
        "attack": ["adversarial-robustness-toolbox>=1.17"],
        "eval": ["rosbags>=0.9", "matplotlib>=3.7", "opencv-python-headless>=4.8", "tqdm>=4.60"],
        # --ray: Ray Core, with the Ray Client's grpcio for --ray ray://HOST:10001 (no dashboard, no torch)
        "scale": ["ray[client]>=2.40,<3"],
        "test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "psutil>=5"],
    },
    zip_safe=False,
    maintainer="rs_guard_ros developers",
    maintainer_email="rs-guard-ros@example.org",
    description="Certified safety gate for VLA-driven robots: randomized smoothing on ROS 2.",
    license="Apache-2.0",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Software Development :: Embedded Systems",
    ],
    entry_points={
        "console_scripts": [
            "rs_guard_node = rs_guard_ros.ros.node:main",
            "rs-guard = rs_guard_ros.cli:main",
            "rs_guard_sim = rs_guard_ros.sim.ros_bridge:main",
        ],
    },
)
