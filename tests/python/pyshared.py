# -*- coding: utf-8 -*-
"""What the differential scripts (pickle_gen.py, py2_relay.py) share: the names that differ
between CPython 2.7 and 3, and their JSON-lines I/O. Runs on both; imported from the script's
own folder (the first entry of sys.path when a script is run by its path)."""
from __future__ import print_function

import binascii
import json
import sys

PY2 = sys.version_info[0] == 2
if PY2:
    text_type = unicode  # noqa: F821
    int_types = (int, long)  # noqa: F821
    long_ = long  # noqa: F821
    unichr_ = unichr  # noqa: F821
else:
    text_type = str
    int_types = (int,)
    long_ = int
    unichr_ = chr


def hexs(b):
    return binascii.hexlify(b).decode("ascii")


def unhex(s):
    return binascii.unhexlify(s.encode("ascii"))


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
