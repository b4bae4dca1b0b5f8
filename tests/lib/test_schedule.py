"""Cron schedules (``lib/schedule``): expressions, time zones, due times, DST edges.

Plain functions of the time given to them: no database, no frozen clock needed
(the scheduler's use of the clock is tested in ``tests/logic/action/test_schedule.py``).
"""
from __future__ import annotations

import datetime

import pytest

from ckanext.harvest.lib import schedule

PARIS = schedule.timezone({"ckan.harvest.timezone": "Europe/Paris"})
UTC = schedule.timezone({})


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# --- expressions -------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("0 3 * * *", "0 3 * * *"),
    ("  */15   8-18 * * mon-fri ", "*/15 8-18 * * mon-fri"),
    ("0 0 1 */3 *", "0 0 1 */3 *"),
])
def test_a_valid_expression_is_kept_with_single_spaces(raw, expected):
    assert schedule.normalize(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("0 3 * *", "a cron expression has 5 fields (minute hour day-of-month month "
                "day-of-week), e.g. '0 3 * * *' for 03:00 every day; this one has 4"),
    ("0 0 3 * * *", "this one has 6"),
    ("@daily", "this one has 1"),
    ("61 * * * *", "Bad minute"),
    ("0 25 * * *", "Bad hour"),
    ("0 3 30 2 *", "Bad day-of-month"),
    ("0 3 * * funday", "Bad day-of-week"),
])
def test_an_invalid_expression_is_refused_with_a_clear_message(raw, message):
    with pytest.raises(schedule.ScheduleError) as raised:
        schedule.normalize(raw)

    assert str(raised.value).startswith("Invalid schedule '")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_schedule_that_is_not_text_is_refused():
    with pytest.raises(schedule.ScheduleError, match="must be a cron expression"):
        schedule.normalize(["0", "3", "*", "*", "*"])


# --- time zones --------------------------------------------------------------------


def test_the_time_zone_defaults_to_utc():
    assert schedule.timezone({}).key == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "../etc/passwd", "CET+1"])
def test_an_unknown_time_zone_is_refused_with_a_clear_message(name):
    with pytest.raises(schedule.ScheduleError) as raised:
        schedule.timezone({"ckan.harvest.timezone": name})

    assert str(raised.value) == (
        "Unknown time zone ckan.harvest.timezone = {!r}: use an IANA name such as UTC "
        "or Europe/Paris".format(name))


# --- due times ---------------------------------------------------------------------


def test_next_due_is_strictly_after_the_given_time():
    assert schedule.next_due("0 3 * * *", _utc("2026-06-01 02:59:30"), UTC) == \
        _utc("2026-06-01 03:00:00")
    assert schedule.next_due("0 3 * * *", _utc("2026-06-01 03:00:00"), UTC) == \
        _utc("2026-06-02 03:00:00")
    assert schedule.next_due("0 * * * *", _utc("2026-06-01 03:00:59"), UTC) == \
        _utc("2026-06-01 04:00:00")


def test_the_expression_is_read_in_the_declared_time_zone():
    # 03:00 in Paris: 01:00 UTC in summer (CEST), 02:00 UTC in winter (CET).
    assert schedule.next_due("0 3 * * *", _utc("2026-06-01 12:00"), PARIS) == \
        _utc("2026-06-02 01:00")
    assert schedule.next_due("0 3 * * *", _utc("2026-12-01 12:00"), PARIS) == \
        _utc("2026-12-02 02:00")


def test_a_time_skipped_by_the_spring_change_runs_when_the_gap_ends():
    # 2026-03-29 in Paris: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    due = [schedule.next_due("30 2 * * *", _utc(after), PARIS)
           for after in ("2026-03-28 12:00", "2026-03-29 12:00")]

    assert due == [_utc("2026-03-29 01:00"),   # 03:00 CEST, once
                   _utc("2026-03-30 00:30")]   # 02:30 CEST the day after


def test_a_time_repeated_by_the_autumn_change_runs_once():
    # 2026-10-25 in Paris: 03:00 CEST becomes 02:00 CET; 02:30 occurs twice.
    first = schedule.next_due("30 2 * * *", _utc("2026-10-24 12:00"), PARIS)
    second = schedule.next_due("30 2 * * *", first, PARIS)

    assert first == _utc("2026-10-25 00:30")    # 02:30 CEST, the first occurrence
    assert second == _utc("2026-10-26 01:30")   # not again at 02:30 CET that night


def test_an_hourly_schedule_runs_in_both_repeated_hours():
    after = _utc("2026-10-24 23:30")
    times = []
    for _ in range(4):
        after = schedule.next_due("0 * * * *", after, PARIS)
        times.append(after)

    assert times == [_utc("2026-10-25 00:00"), _utc("2026-10-25 01:00"),
                     _utc("2026-10-25 02:00"), _utc("2026-10-25 03:00")]


def test_the_preview_lists_the_next_three_runs_in_the_time_zone(ckan_config, monkeypatch):
    monkeypatch.setitem(ckan_config, "ckan.harvest.timezone", "Europe/Paris")

    shown = schedule.preview(" 0  3 * * * ", _utc("2026-10-24 12:00"))

    assert shown == {"schedule": "0 3 * * *", "timezone": "Europe/Paris", "next_runs": [
        "2026-10-25T03:00:00+01:00", "2026-10-26T03:00:00+01:00",
        "2026-10-27T03:00:00+01:00"]}


# --- next_run when a source is saved -------------------------------------------------


def test_saving_a_new_schedule_gives_the_next_due_time():
    now = _utc("2026-06-01 10:00")

    assert schedule.next_run_on_save("0 3 * * *", None, now, UTC) == _utc("2026-06-02 03:00")


def test_saving_keeps_a_due_time_that_passed_without_a_run():
    # Due at 03:00, nobody called ``run`` yet, the source is edited at 03:02.
    now = _utc("2026-06-01 03:02")
    pending = _utc("2026-06-01 03:00")

    assert schedule.next_run_on_save("0 3 * * *", pending, now, UTC) == pending


@pytest.mark.parametrize("stale", [
    "2026-05-20 03:00",   # a due time of this schedule, but not the latest one
    "2026-06-01 02:00",   # not a due time of this schedule (another schedule, a frequency)
])
def test_saving_replaces_a_stale_next_run(stale):
    now = _utc("2026-06-01 10:00")

    assert schedule.next_run_on_save("0 3 * * *", _utc(stale), now, UTC) == \
        _utc("2026-06-02 03:00")


def test_saving_keeps_nothing_from_a_future_next_run_of_another_schedule():
    now = _utc("2026-06-01 10:00")

    assert schedule.next_run_on_save("0 3 * * *", _utc("2026-06-09 00:00"), now, UTC) == \
        _utc("2026-06-02 03:00")
