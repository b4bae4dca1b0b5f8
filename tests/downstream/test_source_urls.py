"""Downstream-style tests: what a source URL must be is its harvester's business."""
from __future__ import annotations

import pytest
from ckan.plugins import toolkit

from ckanext.harvest.tests import factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester test_harvester")


@pytest.mark.parametrize("url", ["basic_test", "urn:catalogue:42", "/srv/exports/catalogue.xml"])
def test_a_harvester_without_url_rules_takes_any_label(url):
    source = factories.HarvestSource(url=url, source_type="test")

    assert source["url"] == url
    shown = toolkit.get_action("harvest_source_show")({"ignore_auth": True}, {"url": url})
    assert shown["id"] == source["id"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("basic_test", "The URL must start with http:// or https://"),
        ("ftp://example.org/", "The URL must start with http:// or https://"),
        ("http:///catalogue", "The URL has no host name"),
        ("https://user:secret@example.org/", "The URL must not contain a user name"),
    ],
)
def test_the_ckan_harvester_takes_only_http_urls(url, message):
    with pytest.raises(toolkit.ValidationError) as error:
        factories.HarvestSource(url=url, source_type="ckan")

    assert error.value.error_dict["url"][0].startswith(message)
    assert toolkit.get_action("harvest_source_list")({"ignore_auth": True}, {}) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("basic\ntest", "The URL must not contain control characters"),
        ("basic\x00test", "The URL must not contain control characters"),
        ("x" * 2049, "The URL is too long"),
        ("   ", "Missing value"),
    ],
)
def test_every_harvester_refuses_what_is_no_url_at_all(url, message):
    with pytest.raises(toolkit.ValidationError) as error:
        toolkit.get_action("harvest_source_create")(
            {"ignore_auth": True, "user": ""},
            {"name": "no-url", "url": url, "source_type": "test"},
        )

    assert error.value.error_dict["url"][0].startswith(message)


def test_a_label_is_unique_together_with_its_config():
    factories.HarvestSource(url="basic_test", source_type="test", name="first")
    with pytest.raises(toolkit.ValidationError) as error:
        toolkit.get_action("harvest_source_create")(
            {"ignore_auth": True, "user": ""},
            {"name": "second", "url": "basic_test", "source_type": "test", "config": ""},
        )
    assert error.value.error_dict["url"][0].startswith(
        "There already is a Harvest Source for this URL")


def test_a_changed_url_is_checked_by_the_harvester_on_update():
    source = factories.HarvestSource(url="http://update.example.org/", source_type="ckan")
    with pytest.raises(toolkit.ValidationError) as error:
        toolkit.get_action("harvest_source_update")(
            {"ignore_auth": True, "user": ""},
            dict(source, url="basic_test"),
        )
    assert error.value.error_dict["url"][0] == "The URL must start with http:// or https://"
