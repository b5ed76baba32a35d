"""Every node executable of the suite, as the tests that start all of them need it (imported by
test_parameter_contract.py and test_diagnostics_nodes.py; pytest puts test/ on sys.path)."""

from recap_bringup import config_dir

#: node name -> (module, parameters it needs beyond the simulated station's parameter file)
EVERY_NODE = {
    "gate": ("recap_teleop.gate_node", {}),
    "policy_node": ("recap_policy_node.policy_node", {}),
    "value_node": ("recap_value_node.value_node", {}),
    "episode_manager": ("recap_teleop.episode_manager_node", {}),
    "sim_station": ("recap_sim.station_node", {"image_width": 32, "image_height": 32}),
    "scripted_operator": ("recap_sim.operator_node", {}),
    "leader_arms": ("recap_teleop.leader_arms_node", {}),
    "joy_teleop": ("recap_teleop.joy_node", {}),
    "recorder": ("recap_recorder.recorder_node", {}),
    # the Interbotix example contract has the simulated station's layout
    "robot_bridge": ("recap_bridge.bridge_node", {"contract": str(config_dir() / "robots" / "aloha_interbotix.yaml")}),
}
