"""Deterministic, non-default sample values for every backhug_interfaces type.

Both ends of the cross-process tests build the same sample with ``sample(cls)``, so the receiver
can compare what arrived field by field with what was sent.
"""

from __future__ import annotations

import importlib
from pathlib import Path

INTERFACES_DIR = Path(__file__).resolve().parents[1] / 'src' / 'backhug_interfaces'


def message_names() -> list[str]:
    """The message type names defined in backhug_interfaces/msg."""
    return sorted(p.stem for p in (INTERFACES_DIR / 'msg').glob('*.msg'))


def message_class(name: str) -> type:
    """The generated Python class of backhug_interfaces/msg/<name>."""
    return getattr(importlib.import_module('backhug_interfaces.msg'), name)


def _value(type_name: str, seed: int):
    base = type_name.split('<', maxsplit=1)[0]
    if base.startswith('sequence'):
        inner = type_name[type_name.index('<') + 1 : type_name.rindex('>')]
        inner = inner.split(',', maxsplit=1)[0]
        return [_value(inner, seed + i) for i in range(3)]
    if base in ('double', 'float'):
        return 0.5 + seed
    if base == 'boolean':
        return seed % 2 == 1
    if base in ('string', 'wstring'):
        return f'value_{seed}'
    if base in ('octet', 'uint8', 'char'):
        return (7 + seed) % 256
    if base in ('int8', 'int16', 'int32', 'int64'):
        return -3 - seed
    if base in ('uint16', 'uint32', 'uint64'):
        return 1000 + seed
    package, _, cls_name = base.partition('/')
    kind = 'msg'
    if '/' in cls_name:
        kind, _, cls_name = cls_name.partition('/')
    module = importlib.import_module(f'{package}.{kind}')
    return sample(getattr(module, cls_name), seed)


def sample(cls: type, seed: int = 1):
    """An instance of ``cls`` with every field set to a value derived from ``seed``."""
    msg = cls()
    for i, (field, type_name) in enumerate(cls.get_fields_and_field_types().items()):
        setattr(msg, field, _value(type_name, seed + i))
    return msg
