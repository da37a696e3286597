"""Customer contact data never reaches a log line: the real logging configuration of
shared/logging.py, rendered (JSON and console), for structlog and stdlib loggers alike."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import masking
from shared.logging import configure_logging, get_logger, mask_text

PHONES = [
    "+8613800138000",
    "13800138000",
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "+1 415 555 0100",
]
EMAILS = ["a@example.com", "Zhang.San+refund@mail.example.cn"]
CN_IDS = ["11010519491231002X", "110105194912310021", "44030619900101123x"]
CARDS = ["6222021234567890123", "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"]
SECRETS = PHONES + EMAILS + CN_IDS + CARDS


@contextlib.contextmanager
def configured(fmt: str) -> Iterator[io.StringIO]:
    """The service's real logging configuration, writing into a buffer instead of stdout."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_stdout = root.handlers[:], root.level, sys.stdout
    saved_factory = logging.getLogRecordFactory()
    saved_hooks = sys.excepthook, threading.excepthook
    buffer = io.StringIO()
    root.handlers = []  # as in a fresh service process
    sys.stdout = buffer  # configure_logging binds both loggers to the stdout of the moment
    try:
        configure_logging("DEBUG", fmt)
    finally:
        sys.stdout = saved_stdout
    try:
        yield buffer
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        logging.setLogRecordFactory(saved_factory)
        sys.excepthook, threading.excepthook = saved_hooks
        logging.captureWarnings(False)
        structlog.reset_defaults()


@pytest.fixture(params=["json", "console"])
def log_lines(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Yields a reader of everything logged so far, rendered."""
    with configured(request.param) as buffer:
        yield buffer.getvalue


def assert_clean(output: str) -> None:
    assert output.strip(), "nothing was logged"
    for secret in SECRETS:
        assert secret not in output, secret
        assert secret.lower() not in output.lower(), secret
    # Not even the long digit runs of a number survive.
    assert "13800138000" not in output.replace(" ", "").replace("-", "")


@pytest.mark.parametrize("secret", SECRETS)
def test_contact_data_in_the_event_text_is_masked(
    log_lines: Callable[[], str], secret: str
) -> None:
    get_logger("test").info(f"customer wrote: call me on {secret} please")
    output = log_lines()
    assert_clean(output)
    assert "customer wrote: call me on [" in output


def test_contact_data_in_fields_nested_values_and_lists_is_masked(
    log_lines: Callable[[], str],
) -> None:
    get_logger("test").warning(
        "complaint_received",
        customer={"id": "u-829", "email": EMAILS[0], "phone": PHONES[0]},
        email=EMAILS[1],
        phone="any format at all",
        description=f"双重扣款，卡号{CARDS[0]}，身份证{CN_IDS[0]}，电话{PHONES[1]}",
        evidence=[{"note": f"from {EMAILS[0]}"}, f"card {CARDS[1]}"],
        id_number=CN_IDS[1],
        contacts=(PHONES[2], PHONES[3], PHONES[4]),
        card=CARDS[2] + " and " + CARDS[3],
        extra_id=CN_IDS[2],
    )
    output = log_lines()
    assert_clean(output)
    assert "any format at all" not in output  # a sensitive key is redacted whatever it holds
    assert "u-829" in output  # the customer's opaque id is not contact data


def test_an_exception_message_and_traceback_are_masked(log_lines: Callable[[], str]) -> None:
    try:
        raise ValueError(f"invalid customer {EMAILS[0]} / {PHONES[0]} / {CARDS[3]}")
    except ValueError:
        get_logger("test").exception("handler_failed")
    output = log_lines()
    assert_clean(output)
    assert "ValueError" in output and "handler_failed" in output


def test_library_logs_through_stdlib_are_masked_too(log_lines: Callable[[], str]) -> None:
    library = logging.getLogger("uvicorn.error")
    library.warning("bad request from %s with %s", EMAILS[1], PHONES[0])
    try:
        raise RuntimeError(f"row rejected: ({CN_IDS[0]}, {CARDS[0]})")
    except RuntimeError:
        library.exception("Exception in ASGI application")
    output = log_lines()
    assert_clean(output)
    assert "Exception in ASGI application" in output and "RuntimeError" in output


def test_context_variables_are_masked(log_lines: Callable[[], str]) -> None:
    with structlog.contextvars.bound_contextvars(
        reply_to=EMAILS[0], ticket_no="WC-20261122-000042"
    ):
        get_logger("test").info("notification_sent")
    output = log_lines()
    assert_clean(output)
    assert "WC-20261122-000042" in output


def test_what_is_not_contact_data_stays_readable(log_lines: Callable[[], str]) -> None:
    get_logger("test").info(
        "complaint_accepted",
        ticket_no="WC-20261122-000042",
        complaint_id="6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b20",
        amount="86.50",
        currency="CNY",
        received_at="2026-11-22T02:16:03.412877+00:00",
        partition=3,
        offset=1234567,
    )
    output = log_lines()
    for readable in (
        "WC-20261122-000042",
        "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b20",
        "86.50",
        "2026-11-22T02:16:03.412877+00:00",
        "1234567",
    ):
        assert readable in output, readable


def test_json_lines_stay_valid_json_with_a_utc_timestamp() -> None:
    with configured("json") as buffer:
        get_logger("test").info("complaint_received", email=EMAILS[0], note=f"tel {PHONES[0]}")
    [line] = buffer.getvalue().strip().splitlines()
    record = json.loads(line)
    assert record["email"] == "[redacted]" and record["note"] == "tel [phone]"
    assert record["timestamp"].endswith("Z") and record["level"] == "info"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail a@example.com now", "mail [email] now"),
        ("id 11010519491231002X.", "id [id]."),
        ("card 4111 1111 1111 1111", "card [card]"),
        ("call +86 138 0013 8000", "call [phone]"),
        ("ticket WC-20261122-000042", "ticket WC-20261122-000042"),
        # Chinese text runs straight into the number: no space, no ASCII word boundary.
        ("电话13800138000请回电", "电话[phone]请回电"),
        ("身份证号11010519491231002X", "身份证号[id]"),
        ("卡号6222021234567890123。", "卡号[card]。"),
        ("手机：+86 138 0013 8000", "手机：[phone]"),
        ("邮箱13800138000@qq.com", "邮箱[email]"),
        # Identifiers, dates and amounts are not contact data.
        (
            "on 2026-11-22 at 2026-11-22T10:15:00+08:00",
            "on 2026-11-22 at 2026-11-22T10:15:00+08:00",
        ),
        ("ref T20261122-0001, 86.50元", "ref T20261122-0001, 86.50元"),
        ("6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b20", "6f0c5b8e-2d4a-4f7e-9b1c-3a5d7e9f1b20"),
    ],
)
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789 -+@.xXWC_a中", max_size=40))
def test_the_fast_path_answers_as_the_full_pattern_would(text: str) -> None:
    # mask_text skips the full pattern when its prefilter finds nothing: that must never
    # change the answer, whatever mix of digits, separators and "@" the text holds.
    assert mask_text(text) == masking._PII.sub(masking._placeholder, text)


# ------------------------------------------------------------------ handlers libraries attach


class RowRejected(Exception):
    """Shaped like asyncpg's errors: the failing row in a DETAIL line of str(exc)."""

    def __str__(self) -> str:
        row = f"{EMAILS[0]}, {PHONES[0]}, {CARDS[3]}"
        return f'null value in column "status"\nDETAIL:  Failing row contains ({row}).'


def test_uvicorns_own_log_config_does_not_bypass_the_masking() -> None:
    import logging.config

    import uvicorn.config

    stderr = io.StringIO()
    with configured("json") as buffer:
        saved, sys.stderr = sys.stderr, stderr  # uvicorn's handlers write to sys.stderr
        try:
            logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # what uvicorn.run does
        finally:
            sys.stderr = saved
        try:
            raise RowRejected()
        except RowRejected:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application\n")
        logging.getLogger("uvicorn").warning("Invalid request from %s", PHONES[0])
    assert stderr.getvalue() == ""  # uvicorn's handler was removed: one stream only
    output = buffer.getvalue()
    assert_clean(output)
    lines = [json.loads(line) for line in output.strip().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "uvicorn"]
    assert "Failing row contains ([email], [phone], [card])" in lines[0]["exception"]


def test_a_handler_faststream_attaches_after_configuration_is_replaced_by_ours() -> None:
    from faststream._internal.logger.logging import get_logger as faststream_logger

    library_stream = io.StringIO()
    with configured("json") as buffer:
        # As the broker does when it starts: own handler, propagate=False.
        broker_logger = faststream_logger(
            "faststream.access.test", logging.INFO, library_stream, "%(message)s"
        )
        assert broker_logger.handlers and not broker_logger.propagate
        broker_logger.error("handler failed for %s", {"email": EMAILS[1]}, exc_info=RowRejected())
    assert library_stream.getvalue() == ""
    output = buffer.getvalue()
    assert_clean(output)
    [line] = output.strip().splitlines()
    record = json.loads(line)
    assert record["logger"] == "faststream.access.test" and record["level"] == "error"
    assert "[email]" in record["event"] and "RowRejected" in record["exception"]


@pytest.mark.parametrize("name", ["aiokafka", "asyncpg", "httpx", "faststream", "asyncio"])
def test_every_library_logger_is_masked_with_arguments_of_any_type(
    log_lines: Callable[[], str], name: str
) -> None:
    library = logging.getLogger(name)
    library.addHandler(logging.StreamHandler(io.StringIO()))  # a stray handler of its own
    library.propagate = False
    error = ValueError(f"Invalid isoformat string: '{PHONES[0]} {EMAILS[0]} {CARDS[3]}'")
    library.error("failed: %s (%r) after %d attempts", error, error, 5)
    library.warning("split %s%s", PHONES[1][:5], PHONES[1][5:])  # the number across two args
    output = log_lines()
    assert_clean(output)
    assert "after 5 attempts" in output
    assert not library.handlers and library.propagate


def test_a_traceback_is_masked_in_every_frame_and_chained_cause(
    log_lines: Callable[[], str],
) -> None:
    try:
        try:
            raise KeyError(CN_IDS[0])
        except KeyError as inner:
            raise RowRejected() from inner
    except RowRejected:
        logging.getLogger("asyncpg").exception("query failed for %s", EMAILS[0])
    output = log_lines()
    assert_clean(output)
    assert "The above exception was the direct cause" in output


def test_an_uncaught_exception_and_a_warning_are_logged_masked() -> None:
    import warnings

    with configured("json") as buffer:
        try:
            raise RowRejected()
        except RowRejected:
            sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
        warnings.warn(f"odd value {PHONES[0]}", UserWarning, stacklevel=1)
    output = buffer.getvalue()
    assert_clean(output)
    assert "uncaught_exception" in output and "odd value [phone]" in output


def test_a_record_that_cannot_be_masked_is_withheld(log_lines: Callable[[], str]) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError(EMAILS[0])

    logging.getLogger("httpx").warning(Unprintable())  # type: ignore[arg-type]
    output = log_lines()
    assert_clean(output)
    assert "log record withheld" in output


def test_mask_is_the_function_for_dead_letter_headers() -> None:
    from shared.logging import mask

    header = str(RowRejected())
    assert mask(header) == (
        'null value in column "status"\nDETAIL:  Failing row contains ([email], [phone], [card]).'
    )
