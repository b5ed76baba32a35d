from setuptools import find_packages, setup

package_name = "recap_policy_node"

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
    description="Policy inference node with chunked 50 Hz control and runtime CFG",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": ["policy_node = recap_policy_node.policy_node:main"],
    },
)
