"""Coverage-guided fuzzing (atheris/libFuzzer) of the two parsers that take outside input:
the board protocol decoder and the program loader.

    python bench/fuzz_atheris.py protocol -runs=200000
    python bench/fuzz_atheris.py schema -max_total_time=60

Properties: ``FrameDecoder.feed`` never raises and whatever frame it yields re-encodes;
``load_program`` raises ProgramError or returns a Program, nothing else. A crash prints the
input and exits non-zero (libFuzzer writes it to crash-<sha1>).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from backhug_programs.schema import Program, ProgramError, load_program

    from backhug_hw_interface import protocol


def fuzz_protocol(data: bytes) -> None:
    decoder = protocol.FrameDecoder()
    half = len(data) // 2
    for chunk in (data[:half], data[half:]):
        for frame in decoder.feed(chunk):
            assert protocol.encode(frame)


def fuzz_schema(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        program = load_program(text + '\n', max_force_n=180.0)
    except ProgramError as error:
        assert error.issues
        return
    assert isinstance(program, Program) and program.phases


def main() -> None:
    targets = {'protocol': fuzz_protocol, 'schema': fuzz_schema}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f'usage: {sys.argv[0]} {"|".join(targets)} [libFuzzer options]')
    target = targets[sys.argv.pop(1)]
    atheris.instrument_all()  # every loaded module (the codec and schema included)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == '__main__':
    main()
