"""Robot bridge: a station's drivers and controllers onto the RECAP topics, as its robot contract says."""
