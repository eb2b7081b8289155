"""The progress bar of every long `rs-guard` command (eval, bench, doctor, attack, examples)."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: float | None, desc: str, unit: str, enabled: bool = True, **options: Any) -> tqdm:
    """The progress bar every long `rs-guard` command draws: on stderr (stdout stays for the result,
    one JSON object with --json), refreshed twice a second on a terminal and every 5 s into a log
    file or pipe, so a captured log is not flooded. `enabled=False` draws nothing."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=0.5 if interactive else 5.0, dynamic_ncols=interactive, **options)
