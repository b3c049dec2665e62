"""The program library: the YAML files shipped in share/backhug_programs/programs.

Programs are found in the installed share directory (ament_index), falling back to the source
folder ``src/backhug_programs/programs`` when the package is not installed. A library file's
``id`` must equal its file name.
"""

from __future__ import annotations

from pathlib import Path

from backhug_programs.schema import Issue, Program, ProgramError, load_program

PACKAGE = 'backhug_programs'
_SOURCE_PROGRAMS = Path(__file__).resolve().parent.parent / 'programs'
DEFAULT_PROGRAM = 'demo'


def programs_directory() -> Path:
    """Folder of the library programs: installed share directory, else the source folder."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / 'programs'
        if installed.is_dir():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    if _SOURCE_PROGRAMS.is_dir():
        return _SOURCE_PROGRAMS
    raise FileNotFoundError(
        f'{PACKAGE}: no program library (not installed, no source folder {_SOURCE_PROGRAMS})'
    )


def program_paths() -> dict[str, Path]:
    """Library program id (file stem) → file, sorted by id."""
    return {path.stem: path for path in sorted(programs_directory().glob('*.yaml'))}


def load_library_program(path: Path) -> Program:
    """Load one library file and check that its id matches the file name."""
    program = load_program(path)
    if program.id != path.stem:
        raise ProgramError(
            [
                Issue(
                    str(path),
                    1,
                    'id',
                    f'expected {path.stem!r} (the file name), got {program.id!r}',
                )
            ]
        )
    return program


def list_programs() -> list[Program]:
    """Every library program, sorted by id (raises ProgramError if a library file is invalid)."""
    return [load_library_program(path) for path in program_paths().values()]


def find_program(id_or_path: str | Path) -> Program:
    """A library program by id, or a program file by path.

    Raises ProgramError (unknown id, unreadable or invalid file).
    """
    text = str(id_or_path)
    paths = program_paths()
    if text in paths:
        return load_library_program(paths[text])
    path = Path(text)
    if path.suffix in ('.yaml', '.yml') or path.is_file():
        return load_program(path)
    known = ', '.join(paths) or 'none'
    raise ProgramError(
        [Issue(text, 0, '', f'no library program {text!r} and no such file; library: {known}')]
    )
