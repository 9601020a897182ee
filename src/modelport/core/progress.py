"""Progress on stderr, shown only when it is a terminal (or MODELPORT_PROGRESS=1)."""
from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm

log = logging.getLogger("modelport")


def progress_bar(total: int, desc: str, unit: str = "B") -> tqdm:
    forced = os.environ.get("MODELPORT_PROGRESS")
    disable = (forced == "0") if forced is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                disable=disable, leave=False, dynamic_ncols=True)
