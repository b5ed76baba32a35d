from setuptools import find_packages, setup

package_name = "recap_recorder"

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
    description="Episode recorder, bag repair and bag to dataset converter",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": ["recorder = recap_recorder.recorder_node:main"],
        "recap.commands": [
            "bag = recap_recorder.commands:BAG",
            "convert = recap_recorder.commands:CONVERT",
        ],
    },
)
