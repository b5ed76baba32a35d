from setuptools import find_packages, setup

package_name = "recap_experiment"

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
    description="The RECAP experiment in simulation: evaluation, pooling, the pipeline, its report, operator-eval",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "recap.commands": [
            "eval = recap_experiment.commands:EVAL",
            "eval-pool = recap_experiment.commands:EVAL_POOL",
            "experiment = recap_experiment.commands:EXPERIMENT",
            "operator-eval = recap_experiment.commands:OPERATOR_EVAL",
        ],
    },
)
