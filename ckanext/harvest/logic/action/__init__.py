"""Harvest actions, by CKAN verb (get, create, update, patch, delete)."""
