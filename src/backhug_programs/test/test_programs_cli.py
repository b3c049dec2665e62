"""`backhug programs`: list, show, validate (exit codes and messages) and preview (a real PNG)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from backhug_programs.cli import main
from backhug_programs.library import programs_directory

GOOD = textwrap.dedent(
    """\
    id: my_program
    name: My program
    description: A test program.
    phases:
      - name: presses
        region: T4-T9
        pattern: rhythmic_press
        force_n: 50
        frequency_hz: 1.0
        duration_s: 30
        ramp_s: 3
    """
)


def test_list_shows_every_library_program(capsys):
    assert main(['list']) == 0
    out = capsys.readouterr().out
    for name in ('full_back', 'lower_back', 'upper_back', 'gentle', 'wake_up', 'wind_down', 'demo'):
        assert name in out
    assert '20:00.0' in out  # full_back's duration


def test_show_places_the_phases_on_the_user(capsys):
    assert main(['show', 'lower_back', '--height', '2.0']) == 0
    out = capsys.readouterr().out
    assert 'lumbar mobilisation' in out and 'lumbar=L1-L5' in out
    assert 'out of reach for this user: L3, L4, L5' in out
    assert main(['show', 'no_such_program']) == 1
    assert 'no library program' in capsys.readouterr().err
    assert main(['show', 'demo', '--height', '3']) == 1
    assert 'height_m' in capsys.readouterr().err


def test_validate_exit_codes_and_errors(tmp_path, capsys):
    good = tmp_path / 'good.yaml'
    good.write_text(GOOD)
    bad = tmp_path / 'bad.yaml'
    bad.write_text(GOOD.replace('pattern: rhythmic_press', 'pattern: kneading'))
    fast = tmp_path / 'fast.yaml'
    fast.write_text(GOOD.replace('force_n: 50', 'force_n: 150').replace('1.0', '3.0'))
    library = sorted(str(p) for p in programs_directory().glob('*.yaml'))

    assert main(['validate', str(good), *library]) == 0
    out = capsys.readouterr().out
    assert out.count('OK ') == 1 + len(library)

    assert main(['validate', str(good), str(bad), str(fast)]) == 1
    captured = capsys.readouterr()
    assert f'OK {good}' in captured.out
    assert f'{bad}:7: phases[0].pattern: unknown pattern' in captured.err
    assert f'{fast}:5: phases[0]:' in captured.err and 'N/s' in captured.err
    assert main(['validate', str(tmp_path / 'missing.yaml')]) == 1
    assert 'cannot read' in capsys.readouterr().err


def test_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / 'preview.png'
    assert (
        main(['preview', 'demo', '--height', '1.8', '--intensity', '0.6', '--out', str(out)]) == 0
    )
    data = out.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 50_000
    assert main(['preview', 'demo', '--intensity', '1.5', '--out', str(tmp_path / 'x.png')]) == 1
    assert 'intensity' in capsys.readouterr().err
    assert not (tmp_path / 'x.png').exists()


def installed_script() -> Path | None:
    try:
        from ament_index_python.packages import get_package_prefix

        path = Path(get_package_prefix('backhug_programs')) / 'lib' / 'backhug_programs'
    except (ImportError, LookupError, ValueError):
        return None
    script = path / 'backhug_programs'
    return script if script.is_file() else None


@pytest.mark.skipif(installed_script() is None, reason='workspace not built (tools/setup.sh)')
def test_console_script_runs():
    script = str(installed_script())
    done = subprocess.run([script, 'list'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and 'full_back' in done.stdout
    done = subprocess.run([script, 'validate', '/no/such.yaml'], capture_output=True, timeout=60)
    assert done.returncode == 1
