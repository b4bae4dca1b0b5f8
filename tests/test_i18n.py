"""The shipped translations: complete, compiled from their .po, and served by CKAN.

Each locale under ``ckanext/harvest/i18n`` has a ``.po`` that translates every
message of the template (``ckanext-harvest.pot``) with its placeholders kept,
and the compiled ``.mo`` CKAN loads at runtime (ITranslation) is the one the
``.po`` compiles to: a ``.po`` edited without ``pybabel compile`` fails here.
docs/web-interface.rst (Translations) tells how to update them.
"""
from __future__ import annotations

import gettext
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any, Union

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

I18N = Path(__file__).resolve().parents[1] / "ckanext" / "harvest" / "i18n"
DOMAIN = "ckanext-harvest"
POT = I18N / (DOMAIN + ".pot")
LOCALES = sorted(path.name for path in I18N.iterdir() if (path / "LC_MESSAGES").is_dir())

#: Placeholders and markup a translation must keep: %(name)s, %s, {name}, {0}, {},
#: and HTML tags.
_TOKEN = re.compile(
    r"%\([A-Za-z_]\w*\)[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
    r"|%[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
    r"|\{\w*(?:![rsa])?(?::[^{}]*)?\}"
    r"|</?[A-Za-z][^<>]*>"
)

MsgId = Union[str, tuple[str, ...]]


def _read(path: Path, locale: Union[str, None] = None) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def _po_path(locale: str) -> Path:
    return I18N / locale / "LC_MESSAGES" / (DOMAIN + ".po")


def _key(message: Message) -> MsgId:
    return message.id if isinstance(message.id, str) else tuple(message.id)


def _messages(catalog: Catalog) -> dict[MsgId, Message]:
    return {_key(m): m for m in catalog if m.id}


def _tokens(text: str) -> Counter[str]:
    return Counter(_TOKEN.findall(text))


def test_sv_is_shipped():
    # The locale the specification requires.
    assert "sv" in LOCALES


@pytest.mark.parametrize("locale", LOCALES)
def test_po_translates_every_message_of_the_template(locale):
    template = _messages(_read(POT))
    catalog = _read(_po_path(locale), locale=locale)
    translations = _messages(catalog)

    assert template, "empty template"
    assert str(catalog.locale) == locale
    assert catalog.plural_forms, "no Plural-Forms header"
    missing = [key for key in template if key not in translations]
    assert not missing, "not in the .po (run pybabel update): {}".format(missing)
    stale = [key for key in translations if key not in template]
    assert not stale, "not in the template any more (run pybabel update): {}".format(stale)

    problems = []
    for key, message in translations.items():
        if message.fuzzy:
            problems.append(("fuzzy", key))
        if isinstance(key, str):
            pairs = [(key, message.string)]
        else:
            strings = message.string
            assert isinstance(strings, tuple) and len(strings) == catalog.num_plurals, key
            # nplurals=2 (sv): form 0 is the singular, every other form the plural.
            pairs = [(key[0], strings[0])] + [(key[1], s) for s in strings[1:]]
        for source, translated in pairs:
            if not translated or not translated.strip():
                problems.append(("untranslated", key))
            elif _tokens(translated) != _tokens(source):
                problems.append(("placeholders", key, translated))
    assert not problems


def _gnu(data: bytes) -> gettext.GNUTranslations:
    return gettext.GNUTranslations(io.BytesIO(data))


def _messages_of(translations: gettext.GNUTranslations) -> dict[Any, str]:
    catalog: dict[Any, str] = translations._catalog  # type: ignore[attr-defined]
    return {key: value for key, value in catalog.items() if key != ""}


def _header(translations: gettext.GNUTranslations) -> dict[str, str]:
    return {key: value for key, value in translations.info().items()
            if key != "generated-by"}


@pytest.mark.parametrize("locale", LOCALES)
def test_shipped_mo_is_the_compiled_po(locale):
    catalog = _read(_po_path(locale), locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    expected = _gnu(compiled.getvalue())
    mo_path = _po_path(locale).with_suffix(".mo")
    assert mo_path.exists(), "run pybabel compile -D {} -d ckanext/harvest/i18n -l {}".format(
        DOMAIN, locale)
    shipped = _gnu(mo_path.read_bytes())

    # Every message, and the header (it carries the plural rule) but for the
    # version of Babel that wrote it: a .mo compiled from an older .po differs.
    assert _messages_of(shipped) == _messages_of(expected)
    assert _header(shipped) == _header(expected)
    assert shipped.plural(1) == expected.plural(1)
    assert shipped.plural(5) == expected.plural(5)


def test_plural_forms_of_sv():
    shipped = _gnu(_po_path("sv").with_suffix(".mo").read_bytes())
    one = shipped.ngettext("{n} object", "{n} objects", 1)
    many = shipped.ngettext("{n} object", "{n} objects", 3)
    assert one.format(n=1) == "1 objekt"
    assert many.format(n=3) == "3 objekt"
    assert shipped.ngettext(
        "{number} harvest source found", "{number} harvest sources found", 2
    ) == "{number} skördningskällor hittades"


@pytest.mark.ckan_config("ckan.plugins", "harvest")
@pytest.mark.usefixtures("clean_db", "clean_index", "with_plugins")
class TestServedInSwedish:
    """CKAN serves the locale-prefixed URLs (``/sv/...``) with our catalogue."""

    def _page(self, app: Any, url: str) -> str:
        response = app.get(url)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    def test_search_page_in_swedish(self, app):
        body = self._page(app, "/sv/harvest/")

        # From our templates (source/search.html, snippets/search_result_text.html)
        assert "Skördningskällor" in body
        assert "Tyvärr hittades inga skördningskällor" in body
        assert "Sök skördningskällor..." in body
        assert "Harvest Sources" not in body
        assert "Sorry no harvest sources found" not in body
        # The facet titles (plugin.SOURCE_FACETS, translated by CKAN's snippets).
        assert "Frekvens" in body
        assert "Frequency" not in body
        # CKAN's own Swedish catalogue is merged with ours, not replaced
        # (the "Groups" link of CKAN's header).
        assert "Grupper" in body

    def test_search_page_in_english_by_default(self, app):
        body = self._page(app, "/harvest/")

        assert "Harvest Sources" in body
        assert "Sorry no harvest sources found" in body
        assert "Skördningskällor" not in body

    @pytest.mark.ckan_config("ckan.locale_default", "sv")
    def test_default_locale_sv(self, app):
        body = self._page(app, "/harvest/")

        assert "Skördningskällor" in body
        assert "Harvest Sources" not in body
