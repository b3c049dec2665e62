"""Where this package's data files are: the installed share directory or the source tree."""

from __future__ import annotations

from pathlib import Path

PACKAGE = 'backhug_description'
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_directory() -> Path:
    """The package's share directory (installed), else the source package root.

    The source tree is preferred when this module runs from it, so that edits to urdf/ and config/
    are live without a rebuild (colcon's --symlink-install links the files anyway).
    """
    if (_SOURCE_ROOT / 'urdf' / 'backhug.urdf.xacro').is_file():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, ValueError) as exc:
        raise FileNotFoundError(
            f'{PACKAGE}: share directory not found (not installed, no source tree at '
            f'{_SOURCE_ROOT})'
        ) from exc
