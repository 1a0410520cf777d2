"""Console benchmark: how long the web console takes to render a page of hits after the API
has answered, in a real headless Chromium (Debian's chromium, driven by Playwright).

Starts Chronik (broker_bench.ServerProcess), produces N JSON log records with
search_bench.produce (stamped over the 2 days before now), waits for the index, then opens
`/?topic=T&q=Q` for each query --runs times in a fresh page. In the page, a MutationObserver
notes when the page's hit rows are all in the DOM and the next animation frame after that
(layout and paint done); the Performance API gives when the /search response ended. Printed:
p50 and max of render (response end -> rows in the DOM) and paint (-> next frame), the
API's own time (took_ms) and the whole navigation (-> rows shown). The issue's bound: under
200 ms after the API answers on the 10M-record corpus.

    python bench/console_bench.py                     # 200,000 records
    python bench/console_bench.py --records 10000000  # the issue's corpus
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import index_bench as ib
from broker_bench import ServerProcess, create_topic, emit, watermarks
from search_bench import caught_up, produce

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.browser import ARGS, VIEWPORT

QUERIES = {
    "all": "",
    "term": "declined",
    "json_path": "value.level:error",
    "phrase": '"connection reset by peer"',
}
# Installed before the page's own scripts: the first moment every expected row is present.
OBSERVER = """
window.__bench = {rows: null, frame: null};
new MutationObserver(() => {
  const b = window.__bench;
  if (b.rows !== null || !window.__want) return;
  if (document.querySelectorAll('.hit').length >= window.__want) {
    b.rows = performance.now();
    requestAnimationFrame(() => { b.frame = performance.now(); });
  }
}).observe(document, {childList: true, subtree: true});
"""
TIMING = """() => {
  const s = performance.getEntriesByType('resource')
    .filter(e => new URL(e.name).pathname === '/search');
  return {rows: window.__bench.rows, frame: window.__bench.frame,
          response_end: s.length ? s[0].responseEnd : null, searches: s.length};
}"""


def sample(ctx: Any, base: str, topic: str, q: str, want: int) -> dict[str, float]:
    page = ctx.new_page()
    try:
        page.add_init_script(OBSERVER + f"window.__want = {want};")
        t0 = time.perf_counter()
        page.goto(base + "/?" + urlencode({"topic": topic, "q": q}))
        page.wait_for_function("() => window.__bench.frame !== null", timeout=60_000)
        shown = time.perf_counter() - t0
        t = page.evaluate(TIMING)
        return {
            "render": t["rows"] - t["response_end"],
            "paint": t["frame"] - t["response_end"],
            "navigation": shown * 1000,
        }
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="records to index")
    ap.add_argument("--runs", type=int, default=5, help="page loads per query")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="chronik-cbench-"))
    seg = max(args.records // 10, 1000)
    srv = ServerProcess(tmp / "data", "interval", ["--segment-max-records", str(seg)])
    base = f"http://127.0.0.1:{srv.http_port}"
    try:
        topic = f"logs-{uuid.uuid4().hex[:8]}"
        create_topic(srv.bootstrap, topic, 1)
        produce(srv.bootstrap, srv.http_port, topic, args.records, 1)
        ends = {0: watermarks(srv.bootstrap, topic, 0)[1]}
        ib.wait_until(lambda: caught_up(srv.data_dir, topic, ends), 3600, "indexing")
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp / "profile"),
                executable_path=args.chromium,
                headless=True,
                args=ARGS,
                viewport=VIEWPORT,
            )
            for kind, q in QUERIES.items():
                api = httpx.get(
                    base + "/search", params={"topic": topic, "q": q, "limit": 50}, timeout=60
                )
                if api.status_code != 200:
                    raise SystemExit(f"/search q={q!r}: {api.status_code} {api.text[:300]}")
                answer = api.json()
                want = len(answer["hits"])
                sample(ctx, base, topic, q, want)  # warm: static files cached, index open
                runs = [sample(ctx, base, topic, q, want) for _ in range(args.runs)]
                print(f"# {kind}: q={q!r} total={answer['total']} rows={want}", flush=True)
                emit(f"{kind}_api_took", answer["took_ms"], "ms")
                for key in ("render", "paint", "navigation"):
                    values = [r[key] for r in runs]
                    emit(f"{kind}_{key}_p50", statistics.median(values), "ms")
                    emit(f"{kind}_{key}_max", max(values), "ms")
            ctx.close()
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
