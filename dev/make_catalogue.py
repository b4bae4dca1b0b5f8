"""Generate a realistic sample catalogue and load it into a CKAN site.

The catalogue is deterministic: the same ``--n`` and ``--seed`` always give the
same organisations, groups and datasets (titles, notes, tags, extras,
resources, licences, contacts), some of them private and a few deleted. It is
loaded through the action API of the target site with a sysadmin API token
(``CKAN_API_TOKEN`` in the environment, or ``--token``). Loading is idempotent:
what exists already (by name) is left alone, so an interrupted run can simply be
run again.

Used by ``dev/demo_harvest.sh`` (the "remote" CKAN the demo harvests) and by
``bench/run.py``. Development tooling only; not shipped.

Examples::

    CKAN_API_TOKEN=... python dev/make_catalogue.py --url http://127.0.0.1:5001
    python dev/make_catalogue.py --url http://127.0.0.1:5001 --check
    python dev/make_catalogue.py --describe --n 300
    CKAN_API_TOKEN=... python dev/make_catalogue.py --url ... --touch 0.1

``--check`` exits 0 when every public dataset of the catalogue is on the site
and in its search index, 2 when they are in the database but not all in the
search index, 1 otherwise.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import sys
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import requests

DEFAULT_N = 300
DEFAULT_SEED = 2026
DEFAULT_PRIVATE_RATIO = 0.08
DEFAULT_DELETED_RATIO = 0.02

# name, title, description, main group, dataset subjects, tags
ORGANISATIONS: list[tuple[str, str, str, str, list[str], list[str]]] = [
    ("dept-transport", "Department of Transport",
     "Roads, railways, buses, cycling, ports and road safety.", "transport",
     ["Road traffic counts", "Bus stop locations", "Rail passenger journeys",
      "Cycle lane network", "Road accident statistics", "Public car parks",
      "Electric vehicle charge points", "Port freight tonnage"],
     ["traffic", "roads", "public transport", "rail", "cycling", "road safety", "parking"]),
    ("environment-agency", "Environment Agency",
     "Air and water quality, waste, flood risk and protected areas.", "environment",
     ["Air quality measurements", "River water quality", "Flood risk zones",
      "Household waste collected", "Protected natural areas", "Noise levels",
      "Groundwater levels", "Greenhouse gas emissions"],
     ["air quality", "water", "flooding", "waste", "biodiversity", "emissions", "noise"]),
    ("ministry-of-health", "Ministry of Health",
     "Hospitals, public health indicators and health services.", "health",
     ["Hospital bed occupancy", "Vaccination coverage", "GP practice locations",
      "Emergency department waiting times", "Life expectancy", "Pharmacy opening hours",
      "Notifiable diseases", "Mental health services"],
     ["hospitals", "public health", "vaccination", "health services", "mortality"]),
    ("national-statistics", "National Statistics Office",
     "Official statistics on population, economy and labour.", "economy",
     ["Population estimates", "Consumer price index", "Employment by sector",
      "Household income", "Business register counts", "Gross domestic product",
      "Housing completions", "Retail sales index"],
     ["population", "prices", "employment", "income", "business", "housing", "census"]),
    ("city-of-riverton", "City of Riverton",
     "Open data published by Riverton city council.", "society",
     ["Council spending over 500", "Street lighting assets", "Planning applications",
      "Library loans", "Public toilets", "Street trees", "Building permits",
      "Council meeting minutes"],
     ["council", "spending", "planning", "libraries", "trees", "local government"]),
    ("meteorological-service", "Meteorological Service",
     "Weather observations, forecasts and climate records.", "environment",
     ["Daily rainfall observations", "Hourly temperature records", "Wind speed records",
      "Sunshine duration", "Storm warnings issued", "Snow depth measurements",
      "Climate normals", "Lightning strikes"],
     ["weather", "climate", "rainfall", "temperature", "observations", "forecast"]),
    ("board-of-education", "Board of Education",
     "Schools, pupils, attainment and education spending.", "education",
     ["School locations", "Pupil enrolment", "Exam results", "Teacher workforce",
      "School meals uptake", "Pupil absence rates", "Higher education applications",
      "Special educational needs"],
     ["schools", "pupils", "attainment", "teachers", "education spending"]),
    ("mapping-agency", "National Mapping Agency",
     "Boundaries, addresses, elevation and reference maps.", "geospatial",
     ["Administrative boundaries", "Address register", "Elevation model",
      "Land cover map", "Postcode centroids", "Building footprints",
      "Place names gazetteer", "Coastline"],
     ["boundaries", "addresses", "elevation", "land cover", "gazetteer", "mapping"]),
]

GROUPS: list[tuple[str, str, str]] = [
    ("environment", "Environment", "Air, water, climate, nature and waste."),
    ("transport", "Transport", "How people and goods move."),
    ("health", "Health", "Health services and public health."),
    ("economy", "Economy and finance", "Prices, income, business and public money."),
    ("education", "Education", "Schools, pupils and skills."),
    ("society", "Population and society", "People, communities and local services."),
    ("geospatial", "Maps and geospatial", "Reference geographic data."),
]

REGIONS = ["North", "South", "East", "West", "Central district", "Coastal area",
           "Highlands", "Riverside", "Île-Verte", "Sønderby", "Zürich-Nord",
           "São Martinho", "Old Town", "Harbour ward"]
YEARS = list(range(2012, 2026))
GENERIC_TAGS = ["open data", "statistics", "time series", "annual", "monthly",
                "official statistics", "csv", "geospatial", "experimental"]
LICENSES = ["cc-by", "cc-by", "cc-by-sa", "cc-zero", "odc-odbl", "odc-by",
            "other-open", "uk-ogl", "notspecified"]
FREQUENCIES = ["daily", "weekly", "monthly", "quarterly", "annual", "irregular"]
FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro",
               "Inès", "João", "Kofi", "Lena", "Mateo", "Nora", "Oskar", "Priya"]
LAST_NAMES = ["Andersen", "Baker", "Costa", "Dubois", "Evans", "Fischer", "García",
              "Hughes", "Ivanova", "Jensen", "Kowalski", "López", "Müller", "Nakamura"]
SYSTEMS = ["SAP BW", "ArcGIS Server", "PostGIS", "Oracle warehouse", "Excel workbook",
           "SensorHub", "Census processing system"]
# format, extension, mimetype, resource name
FORMATS: list[tuple[str, str, Optional[str], str]] = [
    ("CSV", "csv", "text/csv", "Data"),
    ("JSON", "json", "application/json", "Data"),
    ("XLSX", "xlsx",
     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "Spreadsheet"),
    ("PDF", "pdf", "application/pdf", "Methodology"),
    ("GeoJSON", "geojson", "application/geo+json", "Boundaries"),
    ("ZIP", "zip", "application/zip", "Full archive"),
    ("API", "", None, "API endpoint"),
]
SENTENCES = [
    "Update frequency: {frequency}. Each release is checked before publication.",
    "Figures are provisional until the annual review.",
    "Values are rounded to the nearest whole number.",
    "Coordinates use WGS 84 (EPSG:4326).",
    "See the methodology document for definitions and known limitations.",
    "Earlier years are available on request.",
    "Suppressed cells (fewer than 5 records) are shown as `..`.",
]


@dataclass
class Catalogue:
    """The generated catalogue: action API dicts, ready to create."""

    organizations: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    private: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    @property
    def public(self) -> list[str]:
        """Names of the datasets anyone can see (and a harvester can get)."""
        return [d["name"] for d in self.datasets
                if d["name"] not in self.private and d["name"] not in self.deleted]

    def describe(self) -> dict[str, int]:
        return {
            "organizations": len(self.organizations), "groups": len(self.groups),
            "datasets": len(self.datasets), "public": len(self.public),
            "private": len(self.private), "deleted": len(self.deleted),
        }


# --- generation ------------------------------------------------------------------


def slugify(text: str) -> str:
    """An ASCII CKAN name: ``Île-Verte 2019`` → ``ile-verte-2019``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:100]


def _person(rng: random.Random, domain: str) -> tuple[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return "%s %s" % (first, last), "%s.%s@%s" % (slugify(first), slugify(last), domain)


def _notes(rng: random.Random, subject: str, region: str, year: int, org_title: str,
           frequency: str) -> str:
    lines = ["%s for %s, %d, published by the %s." % (subject, region, year, org_title)]
    lines += [s.format(frequency=frequency) for s in rng.sample(SENTENCES, rng.randint(1, 3))]
    text = " ".join(lines)
    if rng.random() < 0.4:
        columns = rng.sample(["date", "site_id", "area_code", "category", "value",
                              "unit", "lower_bound", "upper_bound", "status"], 4)
        text += "\n\nColumns:\n\n" + "\n".join("* `%s`" % c for c in columns)
    return text


def _resources(rng: random.Random, org: str, name: str, year: int) -> list[dict[str, Any]]:
    resources = []
    for fmt, ext, mimetype, label in rng.sample(FORMATS, rng.randint(1, 4)):
        if fmt == "API":
            url = "https://api.example.org/%s/v1/%s" % (org, name)
        else:
            url = "https://files.example.org/%s/%s/%s-%d.%s" % (org, name, slugify(label),
                                                                 year, ext)
        resource: dict[str, Any] = {
            "name": "%s (%s)" % (label, fmt), "url": url, "format": fmt,
            "description": "%s of %s, %s format." % (label, name.replace("-", " "), fmt),
        }
        if mimetype:
            resource["mimetype"] = mimetype
            resource["size"] = rng.randint(2_000, 40_000_000)
        resources.append(resource)
    return resources


def _extras(rng: random.Random, region: str, year: int, frequency: str,
            contact: str, org: str) -> list[dict[str, str]]:
    candidates = {
        "update_frequency": frequency,
        "spatial_coverage": region,
        "temporal_start": "%d-01-01" % year,
        "temporal_end": "%d-12-31" % year,
        "contact_point": contact,
        "language": rng.choice(["en", "en", "fr", "da", "de", "pt"]),
        "source_system": rng.choice(SYSTEMS),
        "quality_checked": rng.choice(["true", "false"]),
    }
    keys = rng.sample(sorted(candidates), rng.randint(2, 5))
    extras = [{"key": key, "value": candidates[key]} for key in sorted(keys)]
    if org == "mapping-agency" or rng.random() < 0.05:
        west, south = rng.uniform(-10, 20), rng.uniform(35, 60)
        bbox = [[west, south], [west + 1, south], [west + 1, south + 1],
                [west, south + 1], [west, south]]
        extras.append({"key": "spatial", "value": json.dumps(
            {"type": "Polygon", "coordinates": [[[round(x, 4), round(y, 4)]
                                                 for x, y in bbox]]})})
    return extras


def _groups_of(rng: random.Random, main_group: str) -> list[dict[str, str]]:
    roll = rng.random()
    if roll < 0.15:
        return []
    groups = [main_group]
    if roll > 0.8:
        other = rng.choice([g[0] for g in GROUPS])
        if other != main_group:
            groups.append(other)
    return [{"name": g} for g in groups]


def _dataset(rng: random.Random, names: set[str]) -> dict[str, Any]:
    org, org_title, _, main_group, subjects, org_tags = rng.choice(ORGANISATIONS)
    for attempt in range(1000):
        subject, region, year = rng.choice(subjects), rng.choice(REGIONS), rng.choice(YEARS)
        title = "%s – %s %d" % (subject, region, year)
        if attempt >= 50:
            title += " (part %d)" % (attempt - 49)
        name = slugify(title)
        if name not in names:
            break
    names.add(name)
    frequency = rng.choice(FREQUENCIES)
    author, author_email = _person(rng, "%s.example.org" % org)
    maintainer, maintainer_email = _person(rng, "%s.example.org" % org)
    tags = rng.sample(org_tags, rng.randint(1, 3)) + rng.sample(GENERIC_TAGS, rng.randint(0, 2))
    if rng.random() < 0.3:
        tags.append(str(year))
    return {
        "name": name,
        "title": title,
        "owner_org": org,
        "notes": _notes(rng, subject, region, year, org_title, frequency),
        "license_id": rng.choice(LICENSES),
        "author": author, "author_email": author_email,
        "maintainer": maintainer, "maintainer_email": maintainer_email,
        "url": "https://data.example.org/%s/%s" % (org, name),
        "version": "%d.%d" % (rng.randint(1, 3), rng.randint(0, 9)),
        "tags": [{"name": t} for t in dict.fromkeys(tags)],
        "extras": _extras(rng, region, year, frequency, maintainer_email, org),
        "groups": _groups_of(rng, main_group),
        "resources": _resources(rng, org, name, year),
    }


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED,
             private_ratio: float = DEFAULT_PRIVATE_RATIO,
             deleted_ratio: float = DEFAULT_DELETED_RATIO) -> Catalogue:
    """The catalogue of ``n`` datasets for ``seed`` (always the same)."""
    rng = random.Random(seed)
    organizations = [{"name": name, "title": title, "description": description}
                     for name, title, description, *_ in ORGANISATIONS]
    groups = [{"name": name, "title": title, "description": description}
              for name, title, description in GROUPS]
    names: set[str] = set()
    datasets = [_dataset(rng, names) for _ in range(n)]
    indices = list(range(n))
    rng.shuffle(indices)
    n_private, n_deleted = round(n * private_ratio), round(n * deleted_ratio)
    private = {datasets[i]["name"] for i in indices[:n_private]}
    deleted = {datasets[i]["name"] for i in indices[n_private:n_private + n_deleted]}
    for dataset in datasets:
        dataset["private"] = dataset["name"] in private
    return Catalogue(organizations, groups, datasets, private, deleted)


# --- the action API --------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, action: str, error: Any) -> None:
        super().__init__("%s: HTTP %s: %s" % (action, status, error))
        self.status = status


class Api:
    """Minimal action API client (one pooled HTTP session per thread)."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            if self.token:
                session.headers["Authorization"] = self.token
        return session

    def call(self, action: str, data: Optional[dict[str, Any]] = None,
             anonymous: bool = False) -> Any:
        url = "%s/api/3/action/%s" % (self.url, action)
        kwargs: dict[str, Any] = {"json": data or {}, "timeout": 120}
        if anonymous:
            response = requests.post(url, **kwargs)
        else:
            response = self._session().post(url, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, action, response.text[:300]) from None
        if not body.get("success"):
            raise ApiError(response.status_code, action, body.get("error"))
        return body["result"]

    def exists(self, action: str, name: str) -> Optional[dict[str, Any]]:
        try:
            return self.call(action, {"id": name})
        except ApiError as e:
            if e.status == 404:
                return None
            raise


# --- loading ---------------------------------------------------------------------


def _ensure(api: Api, kind: str, items: list[dict[str, Any]]) -> int:
    """Create the organisations or groups that are missing; returns how many."""
    created = 0
    for item in items:
        if api.exists("%s_show" % kind, item["name"]) is None:
            api.call("%s_create" % kind, item)
            created += 1
    return created


def _with_retries(func: Callable[[], Any], attempts: int = 4) -> Any:
    """Retry a write that lost a race (e.g. two datasets creating one new tag)."""
    for attempt in range(attempts):
        try:
            return func()
        except (ApiError, requests.RequestException):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _load_dataset(api: Api, dataset: dict[str, Any], delete: bool) -> str:
    existing = api.exists("package_show", dataset["name"])
    if existing is None:
        existing = _with_retries(lambda: _create_unless_exists(api, dataset))
        outcome = "created"
    else:
        outcome = "kept"
    if delete and existing.get("state") != "deleted":
        api.call("package_delete", {"id": existing["id"]})
    return outcome


def _create_unless_exists(api: Api, dataset: dict[str, Any]) -> dict[str, Any]:
    return api.exists("package_show", dataset["name"]) or api.call("package_create", dataset)


def _parallel(func: Callable[[Any], Any], items: Iterable[Any], workers: int,
              label: str, quiet: bool) -> list[Any]:
    items = list(items)
    results: list[Any] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for i, result in enumerate(pool.map(func, items), 1):
            results.append(result)
            if not quiet and (i % 50 == 0 or i == len(items)):
                print("  %s: %d/%d (%.0f s)" % (label, i, len(items),
                                                time.monotonic() - started), flush=True)
    return results


def seed(api: Api, catalogue: Catalogue, workers: int = 4, quiet: bool = False) -> None:
    """Load the catalogue (idempotent)."""
    api.call("status_show")
    new_orgs = _ensure(api, "organization", catalogue.organizations)
    new_groups = _ensure(api, "group", catalogue.groups)
    # package_list reads the database (not the search index, which may be stale):
    # the public datasets it lists exist; every other one is looked up.
    listed = set(api.call("package_list"))
    todo = [d for d in catalogue.datasets
            if d["name"] not in listed or d["name"] in catalogue.deleted]
    outcomes = _parallel(
        lambda d: _load_dataset(api, d, d["name"] in catalogue.deleted),
        todo, workers, "datasets", quiet,
    )
    counts = catalogue.describe()
    print("catalogue at %s: %d organisations (%d new), %d groups (%d new), %d datasets "
          "(%d new): %d public, %d private, %d deleted" % (
              api.url, counts["organizations"], new_orgs, counts["groups"], new_groups,
              counts["datasets"], outcomes.count("created"), counts["public"],
              counts["private"], counts["deleted"]))


def check(api: Api, catalogue: Catalogue) -> int:
    """0: seeded and indexed; 2: seeded, search index incomplete; 1: not seeded."""
    listed = set(api.call("package_list", anonymous=True))
    public = set(catalogue.public)
    in_db = len(public & listed)
    indexed = api.call("package_search", {"rows": 0}, anonymous=True)["count"]
    print("catalogue at %s: %d/%d public datasets in the database, %d in the search index"
          % (api.url, in_db, len(public), indexed))
    if in_db < len(public):
        return 1
    return 0 if indexed >= len(public) else 2


def touch(api: Api, catalogue: Catalogue, fraction: float, workers: int = 4,
          quiet: bool = False) -> int:
    """Change a deterministic ``fraction`` of the public datasets; returns how many."""
    public = catalogue.public
    chosen = random.Random(len(public)).sample(public, round(len(public) * fraction))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    def revise(name: str) -> None:
        current = api.call("package_show", {"id": name})
        major, _, minor = (current.get("version") or "1.0").partition(".")
        api.call("package_patch", {
            "id": name,
            "notes": (current.get("notes") or "").split("\n\nRevised ")[0]
            + "\n\nRevised %s." % stamp,
            "version": "%s.%d" % (major, int(minor or 0) + 1),
        })

    _parallel(revise, chosen, workers, "changed", quiet)
    print("changed %d of %d public datasets at %s" % (len(chosen), len(public), api.url))
    return len(chosen)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of the target CKAN")
    parser.add_argument("--token", default=os.environ.get("CKAN_API_TOKEN"),
                        help="sysadmin API token (default: $CKAN_API_TOKEN)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="number of datasets")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--private-ratio", type=float, default=DEFAULT_PRIVATE_RATIO)
    parser.add_argument("--deleted-ratio", type=float, default=DEFAULT_DELETED_RATIO)
    parser.add_argument("--workers", type=int, default=4, help="parallel API calls")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="only check whether the site holds the catalogue")
    mode.add_argument("--describe", action="store_true",
                      help="print the catalogue's counts as JSON (no network)")
    mode.add_argument("--touch", type=float, metavar="FRACTION",
                      help="change this fraction of the public datasets")
    args = parser.parse_args(argv)
    catalogue = generate(args.n, args.seed, args.private_ratio, args.deleted_ratio)
    if args.describe:
        print(json.dumps(catalogue.describe()))
        return 0
    if not args.url:
        parser.error("--url is required")
    if args.check:
        return check(Api(args.url), catalogue)
    if not args.token:
        parser.error("a sysadmin API token is required (--token or CKAN_API_TOKEN)")
    api = Api(args.url, args.token)
    if args.touch is not None:
        touch(api, catalogue, args.touch, args.workers, args.quiet)
    else:
        seed(api, catalogue, args.workers, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
