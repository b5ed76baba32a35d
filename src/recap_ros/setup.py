from setuptools import find_packages, setup

package_name = "recap_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["fastdds_localhost.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RECAP team",
    maintainer_email="robot-learning@example.org",
    description="ROS 2 glue of the RECAP nodes: conversions, QoS, parameters, node main, model serving, test probe",
    license="Apache-2.0",
    tests_require=["pytest"],
)
