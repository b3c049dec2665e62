#!/usr/bin/env bash
# Entry point of the BackHug images: source ROS 2 and the workspace, then
#   - no arguments or only launch arguments (name:=value):
#       ros2 launch backhug_bringup backhug.launch.py hardware:=$BACKHUG_HARDWARE <arguments>
#     (a later hardware:=... on the command line wins);
#   - anything else is run as a command (e.g. `bash`, `ros2 topic list`, `backhug report ...`).
set -euo pipefail

# ROS setup scripts read unset variables. BACKHUG_ROS_SETUP overrides the distro's setup file.
set +u
# shellcheck disable=SC1090
source "${BACKHUG_ROS_SETUP:-/opt/ros/${ROS_DISTRO:?ROS_DISTRO is not set: not a ROS image}/setup.bash}"
# shellcheck disable=SC1091
source "${BACKHUG_WS:-/opt/backhug}/install/setup.bash"
set -u

launch_arguments_only=1
for argument in "$@"; do
  [[ "$argument" == *:=* ]] || launch_arguments_only=0
done

if [[ $# -eq 0 || $launch_arguments_only -eq 1 ]]; then
  exec ros2 launch backhug_bringup backhug.launch.py "hardware:=${BACKHUG_HARDWARE:-real}" "$@"
fi
exec "$@"
