"""Episode recorder (one MCAP rosbag2 per episode), bag repair, bag to RECAP dataset converter."""
