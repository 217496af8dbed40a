"""`/docs`: the OpenAPI document rendered for people by a page and a script the package serves itself (no CDN,
nothing fetched from elsewhere). The page and the script are served with their content types and reference no
external URL; the renderer (`renderDocument`, a pure function) is run with node when node is installed, and its
HTML names every path, method, parameter, response, schema and problem type of openapi.json."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import httpx
import pytest

from callbridge.http.app import DOCS_PAGE, DOCS_SCRIPT, OPENAPI_DOCUMENT

SRC = Path(__file__).resolve().parents[2] / "src" / "callbridge" / "http"
DOC = json.loads(OPENAPI_DOCUMENT)
METHODS = ("get", "put", "post", "delete", "patch")
NODE = shutil.which("node") or shutil.which("nodejs")


async def test_page_script_and_document_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == DOCS_PAGE == (SRC / "docs.html").read_bytes()
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    script = await client.get("/docs/docs.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.content == DOCS_SCRIPT == (SRC / "docs.js").read_bytes()
    document = await client.get("/openapi.json")
    assert document.headers["content-type"] == "application/json" and document.json() == DOC
    assert (await client.post("/docs")).status_code == 405


def test_the_page_loads_the_served_script_and_the_script_the_served_document() -> None:
    page = DOCS_PAGE.decode("utf-8")
    # relative to /docs: the script at /docs/docs.js, the document at /openapi.json (behind a path prefix too)
    assert re.findall(r'<script[^>]*\bsrc="([^"]+)"', page) == ["docs/docs.js"]
    assert re.findall(r'\bhref="([^"]+)"', page) == ["openapi.json"]
    script = DOCS_SCRIPT.decode("utf-8")
    assert re.findall(r'fetch\("([^"]+)"', script) == ["openapi.json"]


@pytest.mark.parametrize("name", ["docs.html", "docs.js"])
def test_nothing_external_is_referenced(name: str) -> None:
    text = resources.files("callbridge.http").joinpath(name).read_text("utf-8")
    for marker in ("http://", "https://", "//"):
        assert marker not in text, f"{name} holds {marker!r}"
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"'][a-z][a-z0-9+.-]*:", text)  # no scheme (data:, javascript:)
    assert "@import" not in text and "url(" not in text


def test_the_package_ships_the_page_and_the_script() -> None:
    pyproject = (SRC.parents[2] / "pyproject.toml").read_text("utf-8")
    package_data = re.search(r"\[tool\.setuptools\.package-data\]\ncallbridge = \[(.*)\]", pyproject)
    assert package_data is not None
    assert '"**/*.html"' in package_data.group(1) and '"**/*.js"' in package_data.group(1)


def render_with_node(doc: object) -> str:
    assert NODE is not None
    program = ("const {renderDocument} = require(process.argv[1]);"
               "let input = ''; process.stdin.on('data', d => input += d);"
               "process.stdin.on('end', () => process.stdout.write(renderDocument(JSON.parse(input))));")
    done = subprocess.run([NODE, "-e", program, str(SRC / "docs.js")], input=json.dumps(doc), capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(NODE is None, reason="node is not installed: the served structure is checked above")
def test_the_rendering_names_everything_the_document_holds() -> None:
    out = render_with_node(DOC)
    text = html.unescape(re.sub(r"<[^>]+>", "", out))
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                op_id = "op-" + method + "-" + re.sub(r"[^A-Za-z0-9]+", "-", path)
                assert f'id="{op_id}"' in out and f'href="#{op_id}"' in out
                assert f"{method.upper()} {path}" in text
                for parameter in item[method].get("parameters", []):
                    assert f'<code>{html.escape(parameter["name"])}</code>' in out
                for status in item[method]["responses"]:
                    assert f"<td><code>{status}</code></td>" in out
    for name, schema in DOC["components"]["schemas"].items():
        assert f'<section class="schema" id="schema-{name.lower()}"><h3>{name}</h3>' in out
        for member in schema.get("properties", {}):
            assert f"<td><code>{member}</code></td>" in out
    for key, problem in DOC["x-problem-types"].items():
        assert f"<td><code>{key}</code></td><td>{problem['status']}</td>" in out
    assert "webhook: event" in text and "Callbridge-Signature" in text
    for verb in DOC["paths"]["/api/v2/agentbox.php"]["post"]["x-verbs"]:
        assert f"<td><code>{verb}</code></td>" in out


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_rendering_escapes_what_the_document_says() -> None:
    doc = {"info": {"title": "<script>x</script>", "version": "1"},
           "paths": {"/a/{b}": {"get": {"summary": "S & <b>", "description": "`<i>`",
                                        "responses": {"200": {"description": "\"ok\""}}}}}}
    out = render_with_node(doc)
    assert "<script>" not in out and "<b>" not in out and "<i>" not in out
    assert "&lt;script&gt;x&lt;/script&gt;" in out and "S &amp; &lt;b&gt;" in out
    assert "<code>&lt;i&gt;</code>" in out and "&quot;ok&quot;" in out
