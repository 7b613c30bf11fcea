"""The route table in the code and the one in docs/gateway.md say the same thing about every route."""

from __future__ import annotations

import re
from pathlib import Path

from llmserve.gateway.routes import (
    PROXIED,
    REFUSED,
    RESPONSE_BY_ID_PATH,
    RESPONSE_CANCEL_PATH,
    refusal_message,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
ROW = re.compile(r"^\| `(?P<method>[A-Z]+)` \| `(?P<path>[^`]+)` \| [^|]+ \| (?P<decision>[^|]+) \|$")


def documented() -> dict[tuple[str, str], str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            key = (match["method"], match["path"])
            assert key not in rows, f"{key} is in the table twice"
            rows[key] = match["decision"].strip()
    return rows


def test_every_proxied_route_is_documented_as_proxied_and_nothing_else_is() -> None:
    rows = documented()
    in_code = {("POST", r.path) for r in PROXIED} | {
        ("GET", RESPONSE_BY_ID_PATH),
        ("POST", RESPONSE_CANCEL_PATH),
    }
    in_docs = {key for key, decision in rows.items() if decision.startswith("proxy")}
    assert in_code == in_docs


def test_every_refused_route_is_documented_with_its_status() -> None:
    rows = documented()
    in_code = {(r.method, r.path): r.status for r in REFUSED}
    in_docs = {key: int(d.split()[1].rstrip(":")) for key, d in rows.items() if d.startswith("refuse")}
    assert in_code == in_docs


def test_no_route_is_both_proxied_and_refused_and_refusals_explain_themselves() -> None:
    proxied = {("POST", r.path) for r in PROXIED}
    for route in REFUSED:
        assert (route.method, route.path) not in proxied
        message = refusal_message(route)
        assert route.path in message and len(message) > len(route.path) + 20
        assert route.status in (403, 404, 405) and route.code in ("route_not_exposed", "unsupported_route")
