"""structlog set-up: JSON or console, contextvars, and masking of customer contact data.

Masking is applied in three places, so no path to the log stream skips it:

1. structlog's own lines: the `mask_pii` processor, on every field.
2. Every stdlib `LogRecord` (uvicorn, faststream, aiokafka, asyncpg, httpx, anything):
   a record factory masks the message, its arguments and the formatted traceback when
   the record is created, before any handler (ours or one a library attached) sees it.
3. One handler on the root logger for the whole process: library handlers are removed
   and their loggers made to propagate to it, also for loggers configured later (the
   record factory re-checks the logger of each record: faststream adds its handler
   when the broker starts, uvicorn when given a log config).

Every line names its `service`, and carries the complaint's `ticket_no`, `event_id` and
`correlation_id` wherever they are bound (structlog contextvars: the consumer binds them
around each event, the outbox relay around each publish, intake once it has the request's
correlation id, the notifier around each delivery attempt), library lines included.
"""

from __future__ import annotations

import logging
import numbers
import re
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import orjson
import structlog

from shared.masking import SENSITIVE_KEYS, mask, mask_text, mask_value

__all__ = [
    "SENSITIVE_KEYS",
    "MaskingFilter",
    "configure_logging",
    "get_logger",
    "mask",
    "mask_pii",
    "mask_text",
]


def mask_pii(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the last line of defence, applied to every log record."""
    return {key: mask_value(key, value) for key, value in event_dict.items()}


# ------------------------------------------------------------------ stdlib records


class _Masked:
    """A non-string log argument (an exception, a dict, a row) as masked text, so that
    `%s` and `%r` render it masked while numbers keep their type for `%d` and friends."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return mask_text(str(self._value))

    def __repr__(self) -> str:
        return mask_text(repr(self._value))


def _mask_arg(value: Any) -> Any:
    if value is None or isinstance(value, bool | numbers.Number):
        return value
    if isinstance(value, str):
        return mask_text(value)
    return _Masked(value)


def _format_exception(exc_info: Any) -> str:
    return logging.Formatter().formatException(exc_info)


def mask_record(record: logging.LogRecord) -> None:
    """Masks `record` in place; arguments stay separate (some formatters unpack them)."""
    if isinstance(record.msg, str):
        record.msg = mask_text(record.msg)
    elif record.msg is not None:
        record.msg = mask_text(str(record.msg))
    if isinstance(record.args, Mapping):
        record.args = {k: _mask_arg(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_mask_arg(v) for v in record.args)
    if record.exc_info and record.exc_info[0] is not None:
        # Formatted once and masked; exc_info dropped so no formatter re-renders it raw.
        record.exc_text = mask_text(_format_exception(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)


class _ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The process's single log handler (on the root logger)."""


def _adopt(name: str) -> None:
    """Route logger `name` and its ancestors to the root handler: whatever handler a
    library attached is removed, and propagation switched back on."""
    logger = logging.Logger.manager.loggerDict.get(name)
    while isinstance(logger, logging.Logger) and logger is not logging.root:
        if logger.handlers or not logger.propagate:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        logger = logger.parent


_FactoryT = Callable[..., logging.LogRecord]


def _masking_factory(base: _FactoryT) -> _FactoryT:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            if record.name:  # None for the copies logging.makeLogRecord makes
                _adopt(record.name)
            mask_record(record)
        except Exception:  # fail closed: an unmaskable record says nothing
            record.msg, record.args = "[log record withheld: masking failed]", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    factory.masks_pii = True  # type: ignore[attr-defined]
    return factory


# aiokafka logs conditions it retries by itself at ERROR: while a broker starts (its
# group coordinator not elected yet) they are expected and pass. They are kept, at
# WARNING, so an alert or a reader of the log is not sent after a non-event.
_RETRIED_BY_AIOKAFKA = (
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
    "CoordinatorLoadInProgressError",
)


class TransientKafkaErrorsAsWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.ERROR
            and record.name.startswith("aiokafka")
            and any(name in record.getMessage() for name in _RETRIED_BY_AIOKAFKA)
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class MaskingFilter(logging.Filter):
    """On our handler: the whole message masked once more after argument substitution
    (contact data split across the format string and its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        record.msg, record.args = mask_text(record.getMessage()), None
        return True


def _exception_from_record(_logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
    record = event_dict.get("_record")
    if record is not None and record.exc_text and "exception" not in event_dict:
        event_dict["exception"] = record.exc_text
    return event_dict


_MAIN_MODULE = re.compile(r"^services\.(?P<service>[a-z_]+)\.__main__$")


def _service_of_main() -> str | None:
    """The service this process runs as, from `python -m services.<name>`, if it does."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    match = _MAIN_MODULE.match(getattr(spec, "name", None) or "")
    return match["service"] if match else None


def _add_service(service: str | None) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    """Processor: `service` on every line (a value bound in the context wins: several
    services may share one process in tests)."""

    def add(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if service is not None:
            event_dict.setdefault("service", service)
        return event_dict

    return add


def _stdlib_formatter(renderer: Any, service: str | None) -> logging.Formatter:
    """Library records rendered like structlog's own lines (one JSON object per line)."""
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            _add_service(service),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exception_from_record,
            structlog.processors.format_exc_info,
            mask_pii,
        ],
    )


# ------------------------------------------------------------------ uncaught exceptions


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(exc_type, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


# ------------------------------------------------------------------ configuration


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    # orjson: a JSON line in a fraction of the standard library's time, same output.
    return orjson.dumps(obj, default=kwargs.get("default")).decode()


def configure_logging(level: str = "INFO", fmt: str = "json", service: str | None = None) -> None:
    """`service` names every line; by default the `services.<name>` this process runs."""
    service = service or _service_of_main()
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_service(service),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )

    # Libraries log through stdlib logging: at WARNING, into the same stream, masked.
    current = logging.getLogRecordFactory()
    if not getattr(current, "masks_pii", False):
        logging.setLogRecordFactory(_masking_factory(current))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _ServiceHandler(sys.stdout)
    handler.addFilter(TransientKafkaErrorsAsWarnings())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(_stdlib_formatter(renderer, service))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in list(logging.Logger.manager.loggerDict):
        _adopt(name)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
