"""axe-core in the browser tests: the vendored ``axe.min.js`` (tests/vendor/axe-core, from
the npm package, test-only and never served) is evaluated in the page through the DevTools
protocol, which the page's CSP does not govern, so the CSP stays as strict as served."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


@cache
def _source() -> str:
    return AXE.read_text(encoding="utf-8")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on ``page`` as it is now."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(_source() + "\n;undefined")
    found: list[dict[str, Any]] = page.evaluate("""async () => {
      const r = await axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")) }));
    }""")
    return [v for v in found if v["impact"] in BLOCKING]


def assert_accessible(page: Page, name: str) -> None:
    """No serious or critical axe-core violation on ``page``."""
    bad = axe_violations(page)
    assert not bad, f"{name}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in bad)
