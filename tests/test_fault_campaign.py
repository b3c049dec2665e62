"""bench/faults.py (`make faults`) runs and judges: a short campaign of the two faults the
sensors cannot show — a jammed finger and a frozen sensor — on the MuJoCo system.

The full campaign (200+ trials, every fault type) is `make faults`; this keeps its machinery
and its judgement from rotting: the faulted finger's position is read from the simulation,
not from the sensor, and each fault must be stopped (hw_interface's not-following rule, the
safety monitor's frozen-sample rule) with every other finger retracted within the bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get('BACKHUG_SKIP_LONG_TESTS')), reason='BACKHUG_SKIP_LONG_TESTS is set'
)
def test_a_short_campaign_stops_a_jammed_finger_and_a_frozen_sensor(tmp_path):
    out = tmp_path / 'faults.json'
    command = [
        sys.executable,
        str(ROOT / 'bench/faults.py'),
        '--trials', '4',
        '--seed', '11',
        '--families', 'sim',
        '--faults', 'stalled_finger,frozen_sensor',
        '--out', str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=500, check=False)
    assert out.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(out.read_text())
    print(result.stdout[-1500:])
    assert summary['trials'] == 4
    assert {r['fault'] for r in summary['records']} <= {'stalled_finger', 'frozen_sensor'}
    assert summary['violations'] == 0, [r for r in summary['records'] if not r['survived']]
    assert result.returncode == 0
    for record in summary['records']:
        assert record['finger_pressing'], 'the fault must hit a finger that is pressing'
        assert record['stop_s'] is not None and record['stop_s'] <= 10.0, record


def test_unknown_fault_types_and_families_are_refused_naming_them():
    for args, named in ((['--faults', 'gremlins'], 'gremlins'), (['--families', 'moon'], 'moon')):
        result = subprocess.run(
            [sys.executable, str(ROOT / 'bench/faults.py'), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and named in result.stderr, result.stderr
