from setuptools import find_packages, setup

package_name = "recap_teleop"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["joy_default.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RECAP team",
    maintainer_email="robot-learning@example.org",
    description="Policy/teleop gate, episode manager, operator input adapters",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "gate = recap_teleop.gate_node:main",
            "episode_manager = recap_teleop.episode_manager_node:main",
            "joy_teleop = recap_teleop.joy_node:main",
            "leader_arms = recap_teleop.leader_arms_node:main",
        ],
    },
)
