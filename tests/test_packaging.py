"""The wheel ships the package data and entry points CKAN needs, and nothing else."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), ROOT],
        check=True, capture_output=True,
    )
    (path,) = out.glob("ckanext_harvest-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_migrations_and_config_declaration_ship(wheel):
    names = set(wheel.namelist())
    base = "ckanext/harvest/"
    for name in (
        "config_declaration.yaml",
        "migration/harvest/alembic.ini",
        "migration/harvest/env.py",
        "migration/harvest/script.py.mako",
        "migration/harvest/versions/3b4894672727_create_harvest_tables.py",
        "migration/harvest/versions/75d650dfd519_add_cascade_to_harvest_tables.py",
    ):
        assert base + name in names


def test_development_tooling_and_tests_are_not_shipped(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"ckanext", next(t for t in tops if t.endswith(".dist-info"))}


def test_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["ckan.plugins"]) == {
        "harvest": "ckanext.harvest.plugin:Harvest",
        "ckan_harvester": "ckanext.harvest.harvesters:CKANHarvester",
        "test_harvester": "ckanext.harvest.tests.harvesters:MockHarvester",
        "test_harvester2": "ckanext.harvest.tests.harvesters:MockHarvester2",
    }
    assert parser["babel.extractors"]["ckan"] == "ckan.lib.extract:extract_ckan"
