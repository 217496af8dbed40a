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


def _section(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end, page.index(start))]


def test_the_webhook_section_says_how_requests_are_signed_and_it_is_how_they_are() -> None:
    import hashlib
    import hmac

    from callbridge.http.webhooks import SIGNATURE_HEADER, sign, verify_signature

    hooks = _section(PAGE.read_text(encoding="utf-8"), "## Webhooks", "## Schemas")
    assert "Authorization: Bearer" not in hooks  # the receiver is not given a token: requests are signed
    assert f"Header `{SIGNATURE_HEADER}: t=<t>,v1=<hex>`" in hooks
    assert "HMAC-SHA256, keyed with the webhook's secret (its UTF-8 bytes), over the bytes of `t` in decimal, a " \
           "`.`, and the raw request body" in hooks
    assert "more than 300 s away from their own clock, either way" in hooks
    # what the page says, computed by hand, is what callbridge sends and what verify_signature accepts
    secret, body, t = "a-long-random-secret", b'{"seq":7,"type":"call.ended"}', 1_735_689_600
    by_hand = hmac.new(secret.encode("utf-8"), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    assert sign(secret, body, t) == f"t={t},v1={by_hand}"
    assert verify_signature(secret, f"t={t},v1={by_hand}", body, now=t + 300)
    assert verify_signature(secret, f"t={t},v1={by_hand}", body, now=t - 300)
    assert not verify_signature(secret, f"t={t},v1={by_hand}", body, now=t + 301)
    assert not verify_signature(secret, f"t={t},v1={by_hand}", body, now=t - 301)


async def test_the_native_401_is_what_the_page_says() -> None:
    sys.path.insert(0, str(ROOT / "tests" / "http"))
    import httpx
    from http_world import TOKEN, World

    page = PAGE.read_text(encoding="utf-8")
    agents = _section(page, "### GET `/v2/agents`", "### GET `/v2/agents/{agent_id}`")
    assert "`TOKEN_MISSING`: no token. The token is read from `Authorization: Bearer <token>`; when the request " \
           "has no `Authorization` header, from the `wolkvox-token` header instead." in agents
    assert "no `wolkvox-token` header" not in agents
    events = _section(page, "### GET `/v2/events`", "## Webhooks")
    assert "`CONCURRENCY_LIMIT`" not in events and "`TOKEN_LIMIT_EXCEEDED`" not in events
    world = World()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        async def status(path: str, headers: dict[str, str]) -> tuple[int, str | None]:
            response = await client.get(path, headers=headers)
            return response.status_code, response.headers.get("www-authenticate")

        assert await status("/v2/agents", {}) == (401, "Bearer")
        assert await status("/v2/agents", {"authorization": f"Basic {TOKEN}", "wolkvox-token": TOKEN}) == (
            401, "Bearer")  # another scheme counts as no token; wolkvox-token is then not read
        assert await status("/v2/agents", {"authorization": "Bearer   "}) == (401, "Bearer")
        assert await status("/v2/agents", {"wolkvox-token": TOKEN}) == (200, None)
        assert await status("/v2/agents", {"authorization": f"Bearer {TOKEN}"}) == (200, None)
        assert await status("/v2/agents", {"authorization": "Bearer nope"}) == (403, None)
        # the event stream: another scheme falls back to wolkvox-token
        stream = {"authorization": f"Basic {TOKEN}", "wolkvox-token": TOKEN}
        assert (await client.get("/v2/events?wait=0", headers=stream)).status_code == 200
        assert await status("/v2/events?wait=0", {"authorization": "Basic x"}) == (401, "Bearer")
