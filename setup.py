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
    ],
    python_requires=">=3.10",
    # Loose ranges on purpose: a robot brings its own torch (CUDA/Jetson build) and
    # ROS 2; the exact pins used in development live in requirements-dev.txt.
    install_requires=["setuptools", "numpy>=1.24", "scipy>=1.11", "pyyaml>=6", "torch>=2.1,<3"],
    extras_require={
        "models": ["transformers>=4.45", "safetensors>=0.4", "tokenizers>=0.19"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        "sim": ["mujoco>=3.1", "matplotlib>=3.7", "opencv-python-headless>=4.8", "tqdm>=4.60"],
        "attack": ["adversarial-robustness-toolbox>=1.17"],
        "eval": ["rosbags>=0.9", "matplotlib>=3.7", "opencv-python-headless>=4.8", "tqdm>=4.60"],
        "test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "psutil>=5"],
    },
    zip_safe=False,
    maintainer="rs_guard_ros developers",
    maintainer_email="rs-guard-ros@example.org",
    description="Certified safety gate for VLA-driven robots: randomized smoothing on ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "rs_guard_node = rs_guard_ros.node:main",
            "rs-guard = rs_guard_ros.cli:main",
            "rs_guard_sim = rs_guard_ros.sim.ros_bridge:main",
        ],
    },
)
