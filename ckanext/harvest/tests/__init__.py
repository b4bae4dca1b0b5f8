"""Test helpers that downstream harvester suites import (factories, lib, fixtures)."""
