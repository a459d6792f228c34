"""Where audiobatch's log lines go: the console and the Prefect UI (the flow run's logs).

Stdlib loggers are not sent to Prefect's API unless named in PREFECT_LOGGING_EXTRA_LOGGERS; a
worker would need that set too, so the flows attach Prefect's API handler to the `audiobatch`
logger themselves. Each failed item is one log line: Prefect's own "Task run failed with state"
record (which repeats the "Finished in state Failed(...)" line and adds a `NoneType: None`
traceback) is dropped.
"""
from __future__ import annotations

import logging

LOGGER = "audiobatch"


class _NoRepeatedFailure(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Task run failed with state:")


class _ToRunLogs(logging.Handler):
    """Prefect's API log handler, used only inside a flow or task run (an engine loading in
    its own thread, or the CLI before the run, has no run to log to)."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() or TaskRunContext.get():
            self.target.handle(record)


_FILTER = _NoRepeatedFailure()


def route_logs() -> None:
    """Idempotent: INFO and up from `audiobatch.*` reach the console and the run's logs."""
    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # the root logger's WARNING would drop progress notes
    attached = {h.target for h in logger.handlers if isinstance(h, _ToRunLogs)}
    for handler in logging.getLogger("prefect.extra").handlers:  # Prefect's API handler
        if handler not in attached:
            logger.addHandler(_ToRunLogs(handler))
    task_runs = logging.getLogger("prefect.task_runs")
    if _FILTER not in task_runs.filters:
        task_runs.addFilter(_FILTER)
