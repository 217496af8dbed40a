"""docs/api.md is what scripts/gen-api-docs makes of the OpenAPI document the server serves: the check passes on the
committed page and fails (naming the page) as soon as the document says something the page does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen-api-docs"
SPEC = ROOT / "src" / "callbridge" / "http" / "openapi.json"
PAGE = ROOT / "docs" / "api.md"


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_docs_api_md_is_up_to_date() -> None:
    done = _gen("--check")
    assert done.returncode == 0, f"{done.stderr}docs/api.md is stale: run scripts/gen-api-docs and commit it"


def test_the_page_covers_every_endpoint_schema_and_problem_type() -> None:
    doc = json.loads(SPEC.read_text(encoding="utf-8"))
    page = PAGE.read_text(encoding="utf-8")
    for path, item in doc["paths"].items():
        for method in ("get", "put", "post", "delete", "patch"):
            if method in item:
                assert f"### {method.upper()} `{path}`" in page
                for parameter in item[method].get("parameters", []):
                    assert f"| `{parameter['name']}` |" in page
    for name in doc["components"]["schemas"]:
        assert f'<a id="schema-{name.lower()}"></a>' in page
    for key, problem in doc["x-problem-types"].items():
        assert f"| `{key}` | {problem['status']} | `{problem['type']}` |" in page
    for verb in doc["paths"]["/api/v2/agentbox.php"]["post"]["x-verbs"]:
        assert f"| `{verb}` |" in page


def test_a_changed_document_makes_the_check_fail(tmp_path: Path) -> None:
    doc = json.loads(SPEC.read_text(encoding="utf-8"))
    doc["paths"]["/v2/agents"]["get"]["summary"] = "Something the page does not say"
    changed = tmp_path / "openapi.json"
    changed.write_text(json.dumps(doc), encoding="utf-8")
    done = _gen("--spec", str(changed), "--check")
    assert done.returncode == 1
    assert "docs/api.md is stale: run scripts/gen-api-docs" in done.stderr
    out = tmp_path / "api.md"
    assert _gen("--spec", str(changed), "--out", str(out)).returncode == 0
    assert "- GET `/v2/agents`: Something the page does not say" in out.read_text(encoding="utf-8")
    assert _gen("--spec", str(changed), "--out", str(out), "--check").returncode == 0
