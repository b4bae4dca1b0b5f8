"""The harvest plugins load into CKAN and declare their configuration."""
from __future__ import annotations

import re

import pytest
from ckan import plugins as p
from ckan.cli.cli import ckan as ckan_cli
from ckan.exceptions import CkanConfigurationException
from ckan.plugins import toolkit

from ckanext.harvest import mq
from ckanext.harvest.harvesters import CKANHarvester, HarvesterBase
from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.plugin import Harvest

DECLARED_KEYS = [
    "ckan.harvest.mq.type", "ckan.harvest.mq.hostname", "ckan.harvest.mq.port",
    "ckan.harvest.mq.user_id", "ckan.harvest.mq.password",
    "ckan.harvest.mq.virtual_host", "ckan.harvest.mq.redis_db",
    "ckan.harvest.mq.consumer_timeout",  # beyond the original
    "ckan.harvest.timeout", "ckan.harvest.harvest_source_limit",
    "ckan.harvest.not_overwrite_fields",
    "ckanext.harvest.default_dataset_name_append", "ckanext.harvest.user_name",
    "ckan.harvest.timezone", "ckan.harvest.max_running_jobs",  # beyond the original
    "ckan.harvest.status_mail.errored", "ckan.harvest.status_mail.all",
    "ckan.harvest.log_scope", "ckan.harvest.log_level",
    "ckan.harvest.log_timeframe",
    # Beyond the original
    "ckan.harvest.ssrf_allowed_hosts",
    "ckan.harvest.delete_missing.mode",
    "ckan.harvest.delete_missing.after_days",
    "ckan.harvest.delete_missing.max_fraction",
    "ckan.harvest.keep_jobs",
    "ckan.harvest.keep_days",
    "ckan.harvest.max_objects_per_job",
    "ckan.harvest.http_connect_timeout",
    "ckan.harvest.http_read_timeout",
    "ckan.harvest.max_response_size",
    "ckan.harvest.max_response_seconds",
    "ckan.harvest.max_tags_per_dataset",
    "ckan.harvest.max_resources_per_dataset",
    "ckan.harvest.job_list_limit",
    "ckan.harvest.object_list_limit",
    "ckan.harvest.job_report_limit",
    "ckan.harvest.jobs_per_page",
    "ckan.harvest.report_errors_per_page",
    # issue 17: stalls and metrics
    "ckan.harvest.stall_minutes",
    "ckan.harvest.metrics.enabled",
    "ckan.harvest.metrics.token",
]


@pytest.mark.ckan_config("ckan.plugins", "harvest ckan_harvester")
@pytest.mark.usefixtures("with_plugins")
class TestLoaded:
    def test_both_plugins_are_loaded(self):
        assert p.plugin_loaded("harvest")
        assert p.plugin_loaded("ckan_harvester")
        assert isinstance(p.get_plugin("harvest"), Harvest)
        assert Harvest.startup is False

    def test_ckan_harvester_is_found_as_an_iharvester(self):
        harvesters = list(p.PluginImplementations(IHarvester))

        assert [h.info()["name"] for h in harvesters] == ["ckan"]
        assert isinstance(harvesters[0], CKANHarvester)
        assert isinstance(harvesters[0], HarvesterBase)

    def test_declared_defaults_are_typed(self):
        config = toolkit.config
        assert config["ckan.harvest.mq.type"] == "redis"
        assert config["ckan.harvest.harvest_source_limit"] == 100
        assert config["ckan.harvest.log_scope"] == -1
        assert config["ckan.harvest.log_timeframe"] == 30
        assert config["ckan.harvest.status_mail.all"] is False
        assert config["ckan.harvest.not_overwrite_fields"] == []
        assert config["ckanext.harvest.default_dataset_name_append"] == "number-sequence"
        assert config.get("ckan.harvest.mq.hostname") is None

    @pytest.mark.ckan_config("ckan.harvest.not_overwrite_fields", "notes tags")
    def test_list_option_is_split_on_spaces(self):
        assert toolkit.config["ckan.harvest.not_overwrite_fields"] == ["notes", "tags"]


def test_config_declaration_lists_every_key_of_the_spec(cli):
    result = cli.invoke(ckan_cli, ["config", "declaration", "harvest"])

    assert result.exit_code == 0, result.output
    listed = [
        line.split(" = ")[0]
        for line in result.output.splitlines()
        if re.match(r"^ckan(ext)?\.harvest\.[\w.]+ = ", line)
    ]
    assert listed == DECLARED_KEYS


def test_config_declaration_documents_each_key(cli):
    result = cli.invoke(ckan_cli, ["config", "declaration", "harvest", "-d"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for key in DECLARED_KEYS:
        position = next(i for i, line in enumerate(lines) if line.startswith(key + " ="))
        assert lines[position - 1].startswith("## "), key
    assert "misspelling ``ampq``" in result.output


@pytest.mark.parametrize("value", ["redis", "amqp", "ampq"])
def test_known_queue_backends_are_accepted_at_start_up(make_app, ckan_config, monkeypatch, value):
    monkeypatch.setitem(ckan_config, "ckan.plugins", "harvest")
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", value)

    assert make_app() is not None
    assert mq.backend_name(toolkit.config) == ("redis" if value == "redis" else "amqp")


@pytest.mark.parametrize("key, value", [
    ("ckan.harvest.mq.type", "kafka"),
    ("ckan.harvest.delete_missing.mode", "purge"),
    ("ckan.harvest.timezone", "Mars/Olympus_Mons"),
])
def test_an_unknown_backend_or_delete_missing_mode_stops_start_up_clearly(
    make_app, ckan_config, monkeypatch, key, value
):
    monkeypatch.setitem(ckan_config, "ckan.plugins", "harvest")
    monkeypatch.setitem(ckan_config, key, value)

    with pytest.raises(CkanConfigurationException) as error:
        make_app()

    assert key in str(error.value)


@pytest.mark.parametrize("raw,expected", [
    (None, "redis"), ("", "redis"), ("redis", "redis"), (" Redis ", "redis"),
    ("amqp", "amqp"), ("ampq", "amqp"), ("AMQP", "amqp"),
])
def test_backend_name_resolves_aliases(raw, expected):
    assert mq.backend_name({"ckan.harvest.mq.type": raw}) == expected


def test_backend_name_rejects_unknown_values():
    with pytest.raises(mq.UnknownBackendError, match="'kafka'"):
        mq.backend_name({"ckan.harvest.mq.type": "kafka"})
