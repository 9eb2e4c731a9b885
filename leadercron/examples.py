"""Example job functions used by ``examples/demo.yaml``."""

from __future__ import annotations

import logging

from leadercron.term import current_run

log = logging.getLogger("leadercron.examples")


def report() -> None:
    """Log which replica runs this fire, under which term (fencing token)."""
    run = current_run()
    if run is None:
        log.info("report: not running under leadercron")
        return
    log.info(
        "report for %s written by %s with fencing token %d",
        run.scheduled_time_text,
        run.term.identity,
        run.term.token,
    )
