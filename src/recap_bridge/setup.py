from setuptools import find_packages, setup

package_name = "recap_bridge"

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
    description="Robot bridge: a station's own drivers and controllers onto the RECAP topics, by its robot contract",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "robot_bridge = recap_bridge.bridge_node:main",
        ],
    },
)
