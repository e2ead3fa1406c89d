"""The interactive map's page build: branca's per-element Jinja compilation of rendered text
is skipped for text with no Jinja syntax (geo.maps.interactive), with the same output."""

import branca.element
import jinja2
import pytest

from geo.maps.interactive import _deterministic_ids, _PlainText, _template_or_text

SAMPLES = [
    "",
    "\n",
    "plain",
    "ends with a newline\n",
    "two newlines\n\n",
    "  indented\n\tand tabbed  \n",
    'var circle_marker_00000012 = L.circleMarker(\n [52.6, -1.1],\n {"radius": 5}\n);\n',
    "braces alone { } and }} and {",
    "unicode é — \u2028 ▲\n",
    # Jinja syntax or carriage returns: compiled as before
    "{{ 1 + 1 }}\n",
    "{% if true %}yes{% endif %}",
    "{# a comment #}text",
    "windows\r\nline\r\n",
    "old mac\rline",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_text_renders_as_jinja_renders_it(text):
    template = _template_or_text(jinja2.Template)(text)
    assert template.render(this=None, kwargs={}) == jinja2.Template(text).render()


def test_only_plain_text_skips_compilation():
    make = _template_or_text(jinja2.Template)
    assert isinstance(make("var x = 1;\n"), _PlainText)
    assert isinstance(make("a {{ b }}"), jinja2.Template)
    assert isinstance(make("a\r\nb"), jinja2.Template)


def test_branca_is_restored_after_the_page_is_built():
    template, camelify = branca.element.Template, branca.element._camelify
    with _deterministic_ids():
        assert branca.element.Template is not template
        element = branca.element.Element("<p>a</p>\n")
        assert element.render() == "<p>a</p>"
        assert element.get_name() == "element_00000001"
    assert branca.element.Template is template and branca.element._camelify is camelify
