from setuptools import find_packages, setup

package_name = "recap_core"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RECAP team",
    maintainer_email="robot-learning@example.org",
    description="RECAP math, models, dataset format, training, checkpoints, statistics and the recap CLI (no ROS)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": ["recap = recap_core.cli:main"],
        "recap.commands": [
            "train-value = recap_core.commands:TRAIN_VALUE",
            "label = recap_core.commands:LABEL",
            "train-policy = recap_core.commands:TRAIN_POLICY",
            "iterate = recap_core.commands:ITERATE",
            "dataset = recap_core.commands:DATASET",
            "export = recap_core.commands:EXPORT",
            "serve = recap_core.commands:SERVE",
        ],
    },
)
