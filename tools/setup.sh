#!/usr/bin/env bash
# Prepares this checkout for building, running and testing, idempotently:
#   1. Debian packages from tools/apt-packages.txt (installed when root, else listed);
#   2. on a machine without a ROS distro: .venv with the pinned ROS 2 Jazzy wheels and
#      tools from requirements.txt (re-installed only when requirements.txt changes);
#   3. colcon build of src/ into build/ and install/ (serialised by a lock).
# With a ROS distro sourced (ROS_DISTRO set) step 2 is skipped and the distro is used.
# Re-running with nothing changed takes a few seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '[setup] %s\n' "$*" >&2; }

# ---- 1. system packages ----------------------------------------------------------------
missing=()
while read -r pkg _; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < tools/apt-packages.txt
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing system packages (install them, e.g. sudo apt-get install ${missing[*]}); continuing"
  fi
fi

# ---- 2. Python environment -------------------------------------------------------------
if [[ -n "${ROS_DISTRO:-}" ]]; then
  say "using the sourced ROS 2 ${ROS_DISTRO} distro (no venv)"
  python=python3
else
  venv="$root/.venv"
  if [[ ! -x "$venv/bin/python" ]]; then
    py=""
    for cand in python3.11 python3; do
      if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        py="$cand"; break
      fi
    done
    if [[ -z "$py" ]]; then
      say "need CPython 3.11 (the ROS 2 Jazzy wheels are cp311): install python3.11 and python3.11-venv"
      exit 1
    fi
    say "creating .venv with $($py --version)"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  fi
  stamp="$venv/.requirements.sha256"
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    say "installing Python packages from requirements.txt"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
      | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -c 'import rclpy, mujoco, xacro, colcon_core' \
      || { say "Python packages failed to install"; exit 1; }
    echo "$want" > "$stamp"
  fi
  python="$venv/bin/python"
fi

# ---- 3. build the workspace --------------------------------------------------------------
# shellcheck source=/dev/null
BACKHUG_ENV_NO_SETUP=1 source "$root/env.sh" --no-workspace
mkdir -p "$root/log"
exec 9>"$root/.build.lock"
flock 9
colcon --log-base "$root/log" build --base-paths "$root/src" --build-base "$root/build" \
  --install-base "$root/install" --symlink-install \
  --event-handlers console_cohesion- status- summary- console_stderr- \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$(command -v python3)" >"$root/log/last_build.txt" 2>&1 \
  || { tail -n 60 "$root/log/last_build.txt" >&2; say "colcon build failed (full log: log/last_build.txt)"; exit 1; }
say "workspace built"
