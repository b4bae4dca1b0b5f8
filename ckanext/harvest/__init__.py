"""ckanext-harvest: the harvesting framework for CKAN."""
