# BackHug workspace environment. Source it from bash:   source env.sh
# Gives a shell with ROS 2 Jazzy (the sourced distro, or the PyPI wheels in .venv), the built
# workspace (install/) and DDS settings, so `backhug`, the nodes' executables and pytest run.
# On first use it runs tools/setup.sh (install + build); later it only checks, in seconds.
# Options: --no-workspace (do not source install/; used by setup itself).
# Env: BACKHUG_ENV_NO_SETUP=1 skips the setup check.

_bh_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_bh_ws=1
[[ "${1:-}" == "--no-workspace" ]] && _bh_ws=0

if [[ -z "${BACKHUG_ENV_NO_SETUP:-}" ]]; then
  "$_bh_root/tools/setup.sh" || return 1 2>/dev/null || exit 1
fi

if [[ -z "${ROS_DISTRO:-}" || -n "${BACKHUG_WHEELS:-}" ]]; then
  # Plain-Python route: the venv is the ROS prefix.
  export BACKHUG_WHEELS=1
  export VIRTUAL_ENV="$_bh_root/.venv"
  case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # The wheels' shared libraries must be on LD_LIBRARY_PATH before Python starts; do what the
  # ros-wheels-bootstrapper .pth does once, here, and mark it done so that no process re-execs
  # itself and every child process inherits a working path.
  _bh_site="$VIRTUAL_ENV/lib/python3.11/site-packages"
  _bh_libs="$VIRTUAL_ENV/lib"
  for _d in "$_bh_site"/ros_*.libs; do [[ -d "$_d" ]] && _bh_libs="$_bh_libs:$_d"; done
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$VIRTUAL_ENV/lib:"*) ;;
    *) export LD_LIBRARY_PATH="$_bh_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  export ROS_DISTRO_WHEELS=jazzy
  unset _bh_site _bh_libs _d
fi

# Keep DDS discovery on this machine; a domain of our own unless one was chosen.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
# Offscreen rendering for MuJoCo pictures on a machine without a display.
export MUJOCO_GL="${MUJOCO_GL:-egl}"

if [[ $_bh_ws -eq 1 && -f "$_bh_root/install/setup.bash" ]]; then
  # colcon's setup.bash adds our packages to AMENT_PREFIX_PATH, PYTHONPATH, PATH, LD_LIBRARY_PATH.
  # (colcon's scripts read unset variables: relax nounset while sourcing them)
  case $- in *u*) _bh_nounset=1; set +u ;; *) _bh_nounset=0 ;; esac
  COLCON_CURRENT_PREFIX="$_bh_root/install" source "$_bh_root/install/setup.bash"
  [[ $_bh_nounset -eq 1 ]] && set -u
  unset _bh_nounset
  # The `backhug` command (a console script of backhug_bringup; ament puts those in lib/<pkg>).
  _bh_bin="$_bh_root/install/backhug_bringup/lib/backhug_bringup"
  case ":$PATH:" in *":$_bh_bin:"*) ;; *) export PATH="$_bh_bin:$PATH" ;; esac
  unset _bh_bin
fi
unset _bh_ws
