from glob import glob

from setuptools import find_packages, setup

package_name = "recap_bringup"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py") + glob("launch/*.rviz")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/config/robots", glob("config/robots/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RECAP team",
    maintainer_email="robot-learning@example.org",
    description="Station bringup: launch files, station configs, the rviz config and recap station",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "recap.commands": [
            "station = recap_bringup.commands:STATION",
        ],
    },
)
