"""Every configuration key the extension reads, named once.

The keys, their types, defaults and descriptions are declared in
``config_declaration.yaml`` (``ckan config declaration harvest``); code reads the
typed values from CKAN's configuration through these names, so that a search for
a constant finds every reader.

:func:`value` also serves code that is handed a plain ``dict`` instead of CKAN's
configuration (downstream test suites patch module ``config`` attributes with
one): a key missing from it has its declared default, read from the
declaration, never repeated in code.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

# -- queue backend -------------------------------------------------------------------
MQ_TYPE = "ckan.harvest.mq.type"
MQ_HOSTNAME = "ckan.harvest.mq.hostname"
MQ_PORT = "ckan.harvest.mq.port"
MQ_USER_ID = "ckan.harvest.mq.user_id"
MQ_PASSWORD = "ckan.harvest.mq.password"
MQ_VIRTUAL_HOST = "ckan.harvest.mq.virtual_host"
MQ_REDIS_DB = "ckan.harvest.mq.redis_db"
MQ_CONSUMER_TIMEOUT = "ckan.harvest.mq.consumer_timeout"

# -- jobs and scheduling -------------------------------------------------------------
TIMEOUT = "ckan.harvest.timeout"
SOURCE_LIMIT = "ckan.harvest.harvest_source_limit"
NOT_OVERWRITE_FIELDS = "ckan.harvest.not_overwrite_fields"
NAME_APPEND = "ckanext.harvest.default_dataset_name_append"
USER_NAME = "ckanext.harvest.user_name"
MAX_OBJECTS_PER_JOB = "ckan.harvest.max_objects_per_job"
TIMEZONE = "ckan.harvest.timezone"
MAX_RUNNING_JOBS = "ckan.harvest.max_running_jobs"

# -- retention of old jobs (ckan harvester run, clean-jobs) -----------------------------
KEEP_JOBS = "ckan.harvest.keep_jobs"
KEEP_DAYS = "ckan.harvest.keep_days"

# -- removal of datasets missing at the source (site default of delete_missing) ------
DELETE_MISSING_MODE = "ckan.harvest.delete_missing.mode"
DELETE_MISSING_AFTER_DAYS = "ckan.harvest.delete_missing.after_days"
DELETE_MISSING_MAX_FRACTION = "ckan.harvest.delete_missing.max_fraction"

# -- lists and pages -----------------------------------------------------------------
JOB_LIST_LIMIT = "ckan.harvest.job_list_limit"
OBJECT_LIST_LIMIT = "ckan.harvest.object_list_limit"
JOB_REPORT_LIMIT = "ckan.harvest.job_report_limit"
JOBS_PER_PAGE = "ckan.harvest.jobs_per_page"
REPORT_ERRORS_PER_PAGE = "ckan.harvest.report_errors_per_page"

# -- notifications and logging ------------------------------------------------------
STATUS_MAIL_ERRORED = "ckan.harvest.status_mail.errored"
STATUS_MAIL_ALL = "ckan.harvest.status_mail.all"
LOG_SCOPE = "ckan.harvest.log_scope"
LOG_LEVEL = "ckan.harvest.log_level"
LOG_TIMEFRAME = "ckan.harvest.log_timeframe"

# -- stalls, health page and metrics ------------------------------------------------
STALL_MINUTES = "ckan.harvest.stall_minutes"
METRICS_ENABLED = "ckan.harvest.metrics.enabled"
METRICS_TOKEN = "ckan.harvest.metrics.token"

# -- security and limits ------------------------------------------------------------
SSRF_ALLOWED_HOSTS = "ckan.harvest.ssrf_allowed_hosts"
HTTP_CONNECT_TIMEOUT = "ckan.harvest.http_connect_timeout"
HTTP_READ_TIMEOUT = "ckan.harvest.http_read_timeout"
MAX_RESPONSE_SIZE = "ckan.harvest.max_response_size"
MAX_RESPONSE_SECONDS = "ckan.harvest.max_response_seconds"
MAX_TAGS_PER_DATASET = "ckan.harvest.max_tags_per_dataset"
MAX_RESOURCES_PER_DATASET = "ckan.harvest.max_resources_per_dataset"

# -- CKAN core options the extension reads ------------------------------------------
SITE_ID = "ckan.site_id"
SITE_URL = "ckan.site_url"
SITE_TITLE = "ckan.site_title"
REDIS_URL = "ckan.redis.url"
SOLR_COMMIT = "ckan.search.solr_commit"

DECLARATION = Path(__file__).with_name("config_declaration.yaml")

def _as_list(value: Any) -> list[Any]:
    return list(value or ())


_CONVERTERS: dict[str, Callable[[Any], Any]] = {"int": int, "bool": bool, "list": _as_list}


@functools.cache
def _declared_defaults() -> dict[str, Any]:
    with DECLARATION.open(encoding="utf-8") as stream:
        declaration = yaml.safe_load(stream)
    defaults = {}
    for group in declaration["groups"]:
        for option in group["options"]:
            default = option.get("default")
            convert = _CONVERTERS.get(option.get("type", ""))
            defaults[option["key"]] = convert(default) if convert else default
    return defaults


def declared_default(key: str) -> Any:
    """The default ``config_declaration.yaml`` gives ``key`` (None when it has none).

    :raises KeyError: for a key this extension does not declare
    """
    return _declared_defaults()[key]


def value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or its declared default when ``config`` lacks it, or has
    None or an empty string (``key =`` in an ini file).

    :param config: CKAN's configuration, or a plain mapping standing in for it
    :param key: one of the declared keys of this module
    """
    found = config.get(key, None)
    return declared_default(key) if found is None or found == "" else found
