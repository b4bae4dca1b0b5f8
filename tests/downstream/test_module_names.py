"""Downstream-style tests: module names that other extensions import and patch.

Each test patches a module attribute the way a downstream suite does (both
``mock.patch`` with a plain dict and ``mock.patch.dict``) and checks that the
behaviour follows the patch.
"""
from __future__ import annotations

import importlib
import json
import re
from unittest import mock

import pytest
from ckan.plugins import toolkit
from ckan.tests import factories as ckan_factories

from ckanext.harvest import queue
from ckanext.harvest.harvesters import ckanharvester
from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.harvesters.ckanharvester import CKANHarvester
from ckanext.harvest.tests import factories
from ckanext.harvest.tests.harvesters import MockHarvester
from ckanext.harvest.tests.lib import run_harvest_job

_NAME_APPEND = "ckanext.harvest.default_dataset_name_append"

#: The names each module of the original extension offered at its path and that
#: downstream code imports or patches.
MODULE_NAMES = {
    "ckanext.harvest.harvesters.base": ["config", "model", "log", "toolkit",
                                        "munge_tag", "munge_title_to_name"],
    "ckanext.harvest.harvesters.ckanharvester": ["config", "model", "log", "toolkit",
                                                 "requests", "HarvesterBase"],
    "ckanext.harvest.queue": ["config", "log"],
    "ckanext.harvest.logic.action.get": ["config", "log", "model"],
    "ckanext.harvest.logic.action.update": ["config", "log", "model",
                                            "harvest_source_show"],
}


@pytest.mark.parametrize("module_name", sorted(MODULE_NAMES))
def test_the_module_keeps_the_names_downstream_code_patches(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in MODULE_NAMES[module_name] if not hasattr(module, name)]
    assert missing == []
    for name in MODULE_NAMES[module_name]:
        with mock.patch("%s.%s" % (module_name, name)):
            pass


@pytest.mark.usefixtures("clean_db")
class TestPatchingConfig:
    def test_a_patched_base_config_chooses_the_name_suffix(self):
        ckan_factories.Dataset(name="trees")
        with mock.patch("ckanext.harvest.harvesters.base.config",
                        {_NAME_APPEND: "random-hex"}):
            name = HarvesterBase._gen_new_name("Trees")
        assert re.fullmatch(r"trees[0-9a-f]{5}", name)

    def test_a_patched_dict_base_config_chooses_the_name_suffix(self):
        ckan_factories.Dataset(name="trees")
        with mock.patch.dict("ckanext.harvest.harvesters.base.config",
                             {_NAME_APPEND: "random-hex"}):
            name = HarvesterBase._gen_new_name("Trees")
        assert re.fullmatch(r"trees[0-9a-f]{5}", name)
        assert HarvesterBase._gen_new_name("Trees") == "trees1"

    def test_a_patched_base_config_names_the_harvest_user(self):
        harvester = HarvesterBase()
        harvester._user_name = None
        with mock.patch("ckanext.harvest.harvesters.base.config",
                        {"ckanext.harvest.user_name": "someone-else"}):
            assert harvester._get_user_name() == "someone-else"
        harvester._user_name = None


def test_a_patched_queue_config_chooses_the_backend():
    with mock.patch("ckanext.harvest.queue.config", {"ckan.harvest.mq.type": "nonsense"}):
        with pytest.raises(Exception, match="not a valid queue type nonsense"):
            queue.get_connection()
    with mock.patch("ckanext.harvest.queue.config", {"ckan.site_id": "elsewhere"}):
        assert queue.get_gather_queue_name() == "ckan.harvest.elsewhere.gather"
        assert queue.get_fetch_routing_key() == "ckanext-harvest:elsewhere:harvest_object_id"


def test_a_patched_ckanharvester_config_sets_the_limits():
    dataset = {"id": "d1", "tags": [{"name": "a"}, {"name": "b"}], "resources": []}
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.config",
                    {"ckan.harvest.max_tags_per_dataset": 1}):
        with pytest.raises(ValueError, match="too many tags: 2"):
            ckanharvester._check_remote_dataset(dataset)
    # A plain dict without the option means no limit.
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.config", {}):
        ckanharvester._check_remote_dataset(dataset)


def test_a_patched_requests_get_answers_the_harvester():
    answer = mock.Mock(text=json.dumps({"success": True, "result": {"count": 0,
                                                                    "results": []}}))
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.requests.get",
                    return_value=answer) as get:
        content = CKANHarvester()._get_content("http://remote.example.com/api/x")
    assert json.loads(content)["success"] is True
    assert get.call_args[0][0] == "http://remote.example.com/api/x"


@pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester")
@pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index")
class TestPatchingActionConfig:
    def test_a_patched_get_config_limits_the_source_list(self):
        for n in range(3):
            factories.HarvestSource(url="http://%d.limit.example.com/" % n)
        list_sources = toolkit.get_action("harvest_source_list")
        assert len(list_sources({"ignore_auth": True}, {})) == 3
        with mock.patch("ckanext.harvest.logic.action.get.config",
                        {"ckan.harvest.harvest_source_limit": 2}):
            assert len(list_sources({"ignore_auth": True}, {})) == 2

    @pytest.mark.usefixtures("with_request_context")
    def test_a_patched_update_config_sends_the_error_mail(self):
        source = factories.HarvestSourceObj(
            url="http://mail.example.com/",
            config=json.dumps({"datasets": [{"guid": "g1"}],
                               "import": {"g1": "error"}}))
        job = factories.HarvestJobObj(source=source)

        with mock.patch("ckanext.harvest.logic.action.update.config",
                        {"ckan.harvest.status_mail.errored": True,
                         "ckan.site_title": "Patched site",
                         "ckan.site_url": "http://patched.example.com"}), \
                mock.patch("ckanext.harvest.lib.mail.send_mail") as send_mail:
            run_harvest_job(job, MockHarvester())
        assert toolkit.get_action("harvest_job_show")(
            {"ignore_auth": True}, {"id": job.id})["status"] == "Finished"
        mail = send_mail.call_args[0][2]
        assert mail["subject"] == "Patched site - Harvesting Job - Error Notification"
        assert "http://patched.example.com/harvest/" in mail["body"]
