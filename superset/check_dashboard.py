"""Looks at the provisioned Superset as a person would, and checks its numbers.

1. Logs in over the REST API and, for every chart of the "Bluesky trends" dashboard, asks
   /api/v1/chart/data for the rows the chart shows; compares them with the lake's Parquet files
   read directly with pyarrow.
2. Opens the dashboard in headless Chromium (selenium), waits until its five charts have
   rendered (a canvas or a table with rows, no error), and saves a screenshot.

Usage (with Superset's venv python, which has requests, pyarrow and selenium):
  check_dashboard.py --url http://127.0.0.1:8088 --lake DIR --screenshot OUT.png
"""

import argparse
import collections
import datetime
import json
import sys
import time

import pyarrow.dataset as ds
import requests


def lake_table(lake, name):
    return ds.dataset(f"{lake}/{name}", format="parquet", partitioning="hive").to_table()


def sums(table, key, value, keep=None):
    out = collections.Counter()
    for k, v in zip(table.column(key).to_pylist(), table.column(value).to_pylist()):
        out[keep(k) if keep else k] += v
    return out


class Superset:
    def __init__(self, url, user, password):
        self.url = url.rstrip("/")
        self.s = requests.Session()
        r = self.s.post(
            f"{self.url}/api/v1/security/login",
            json={"username": user, "password": password, "provider": "db", "refresh": True},
            timeout=30,
        )
        r.raise_for_status()
        self.s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def get(self, path, **params):
        r = self.s.get(f"{self.url}{path}", params=params, timeout=60)
        r.raise_for_status()
        return r.json()

    def chart_data(self, dataset_id, query):
        body = {
            "datasource": {"id": dataset_id, "type": "table"},
            "queries": [query],
            "result_format": "json",
            "result_type": "full",
        }
        r = self.s.post(f"{self.url}/api/v1/chart/data", json=body, timeout=120)
        if r.status_code != 200:
            raise AssertionError(f"chart data {r.status_code}: {r.text[:2000]}")
        res = r.json()["result"][0]
        if res.get("error"):
            raise AssertionError(f"chart data error: {res['error']}")
        return res["data"]


def top(counter, n):
    """The n largest, and the value a row must beat to be certain to be among them (ties)."""
    items = counter.most_common()
    cut = items[n - 1][1] if len(items) >= n else 0
    return items, cut


def check_top(name, got_rows, key, metric, counter, n):
    got = {r[key]: r[metric] for r in got_rows}
    assert len(got) == min(n, len(counter)), f"{name}: {len(got)} rows: {got_rows}"
    items, cut = top(counter, n)
    for k, v in got.items():
        assert counter[k] == v, f"{name}: {k} = {v} in Superset, {counter[k]} in the lake"
        assert v >= cut, f"{name}: {k} ({v}) is not among the top {n} (cut {cut})"
    for k, v in items:
        if v > cut:
            assert k in got, f"{name}: {k} ({v}) missing from the top {n}"
    print(f"  {name}: {len(got)} rows match the lake (top: {items[0][0]} = {items[0][1]})")


def check_numbers(sup, lake):
    dash = sup.get("/api/v1/dashboard/bluesky-trends")["result"]
    charts = sup.get("/api/v1/dashboard/bluesky-trends/charts")["result"]
    names = sorted(c["slice_name"] for c in charts)
    print(f"dashboard '{dash['dashboard_title']}': {names}")
    assert len(charts) == 5, names
    datasets = {
        d["table_name"]: d["id"]
        for d in sup.get("/api/v1/dataset/", q="(page_size:100)")["result"]
    }
    time_axis = lambda grain: {  # noqa: E731
        "columnType": "BASE_AXIS",
        "sqlExpression": "window_end",
        "label": "window_end",
        "expressionType": "SQL",
        "timeGrain": grain,
    }

    ta = lake_table(lake, "trend_alerts").to_pylist()
    assert ta, "the lake holds no trend alerts"
    latest = max(r["window_end"] for r in ta)
    day = [r for r in ta if r["window_end"] > latest - datetime.timedelta(days=1)]
    first_seen = {}
    for r in day:
        k = (r["keyword"], r["lang"])
        first_seen[k] = min(first_seen.get(k, r["window_end"]), r["window_end"])

    # Trending now: the newest window by rank, each with when it first trended.
    want = sorted((r["rank"], r["keyword"], ms(first_seen[(r["keyword"], r["lang"])]))
                  for r in ta if r["window_end"] == latest)
    rows = sup.chart_data(
        datasets["current_trends"],
        {"columns": ["rank", "keyword", "first_seen"], "metrics": [], "row_limit": 100,
         "orderby": [["rank", True]]},
    )
    got = sorted((r["rank"], r["keyword"], r["first_seen"]) for r in rows)
    assert got == want, f"trending now: {got} vs {want}"
    print(f"  trending now: {len(got)} rows of window {latest} match the lake, with first seen")

    # Trend timeline: per keyword, the 5-minute buckets it trended in and its top score.
    buckets = collections.defaultdict(set)
    top_score = collections.defaultdict(float)
    for r in day:
        t = r["window_end"]
        buckets[r["keyword"]].add(t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0))
        top_score[r["keyword"]] = max(top_score[r["keyword"]], r["score"])
    rows = sup.chart_data(
        datasets["trend_timeline"],
        {"columns": [{"columnType": "BASE_AXIS", "sqlExpression": "bucket", "label": "bucket",
                      "expressionType": "SQL", "timeGrain": "PT1M"}, "keyword"],
         "metrics": ["max_score"], "row_limit": 10000},
    )
    got_buckets = collections.Counter(r["keyword"] for r in rows)
    got_top = collections.defaultdict(float)
    for r in rows:
        got_top[r["keyword"]] = max(got_top[r["keyword"]], r["max_score"])
    assert got_buckets == collections.Counter({k: len(v) for k, v in buckets.items()}), \
        f"timeline: {dict(got_buckets)} vs {({k: len(v) for k, v in buckets.items()})}"
    for k, v in top_score.items():
        assert abs(got_top[k] - v) < 1e-6, f"timeline: {k} top score {got_top[k]} vs {v}"
    print(f"  trend timeline: {len(rows)} cells of {len(buckets)} keywords match the lake")

    # Mentions of today's trends: the keyword counts of exactly those keywords (in the
    # language group they trended in), not the most frequent words.
    kc = lake_table(lake, "keyword_counts").to_pylist()
    trended = set(first_seen)
    mentions = collections.Counter()
    for r in kc:
        if (r["keyword"], r["lang"]) in trended and r["window_end"] > latest - datetime.timedelta(days=1):
            mentions[r["keyword"]] += r["count"]
    rows = sup.chart_data(
        datasets["trend_mentions"],
        {"columns": ["keyword"], "metrics": ["mentions"], "row_limit": 1000},
    )
    got = {r["keyword"]: r["mentions"] for r in rows}
    assert got == dict(mentions), f"trend mentions: {got} vs {dict(mentions)}"
    print(f"  mentions of today's trends: {len(got)} keywords match the lake: {', '.join(sorted(got))}")

    hc = lake_table(lake, "hashtag_counts")
    rows = sup.chart_data(
        datasets["hashtag_counts"],
        {"columns": ["keyword"], "metrics": ["mentions"], "orderby": [["mentions", False]],
         "row_limit": 15},
    )
    check_top("hashtag leaderboard", rows, "keyword", "mentions", sums(hc, "keyword", "count"), 15)

    # Volume by language: every closed minute; the newest (a stream that ended flushes it
    # partly filled) is left out, so the chart does not end in a drop.
    pv = lake_table(lake, "post_volume")
    per_minute = sums(pv, "window_end", "posts")
    newest = max(per_minute)
    closed = {t: v for t, v in per_minute.items() if t != newest}
    rows = sup.chart_data(
        datasets["post_volume_closed"],
        {"columns": [time_axis("PT1M")], "metrics": ["posts"], "row_limit": 100000,
         "orderby": [[time_axis("PT1M"), True]]},
    )
    assert sorted(r["posts"] for r in rows) == sorted(closed.values()), "posts per minute"
    assert max(r["window_end"] for r in rows) < ms(newest), "the newest minute is shown"
    values = [r["posts"] for r in rows]
    median = sorted(values)[len(values) // 2]
    assert values[-1] >= median / 2, f"the chart ends in a drop: {values[-5:]} (median {median})"
    print(f"  posts per minute: {len(rows)} closed minutes match the lake "
          f"(newest, {per_minute[newest]} posts, left out; last shown {values[-1]}, median {median})")


def ms(t):
    """A lake timestamp as the epoch milliseconds Superset's JSON results carry."""
    return int(t.timestamp() * 1000)


def screenshot(url, user, password, out, chromium, chromedriver):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    import tempfile

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--window-size=1600,1200",
              f"--user-data-dir={tempfile.mkdtemp(prefix='skystream-chromium-')}"]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    try:
        driver.set_page_load_timeout(120)
        login(driver, url, user, password)
        driver.get(f"{url}/superset/dashboard/bluesky-trends/?standalone=1")
        deadline = time.time() + 120
        state = {}
        while True:
            state = driver.execute_script(
                """
                const cs = [...document.querySelectorAll('.chart-container')];
                return {
                  charts: cs.length,
                  rendered: cs.filter(c => c.querySelector('canvas, svg, table tbody tr')).length,
                  loading: document.querySelectorAll('.loading, .ant-skeleton').length,
                  errors: [...document.querySelectorAll('.dashboard-component-chart-holder')]
                    .map(h => h.querySelector('[role=alert], .alert-danger, .ant-alert-error'))
                    .filter(e => e).map(e => e.innerText.slice(0, 300)),
                };
                """
            )
            if state["charts"] >= 5 and state["rendered"] >= 5 and state["loading"] == 0:
                break
            assert not state["errors"], f"chart errors on the dashboard: {state['errors']}"
            assert time.time() < deadline, f"dashboard did not render: {state}"
            time.sleep(0.5)
        # The charts animate in: the screenshot is taken once two captures in a row agree.
        previous = None
        while True:
            png = driver.get_screenshot_as_png()
            if png == previous:
                break
            assert time.time() < deadline, "the dashboard never stopped changing"
            previous = png
            time.sleep(0.5)
        with open(out, "wb") as f:
            f.write(png)
        print(f"  dashboard rendered: {state['rendered']} charts; screenshot: {out}")
    finally:
        driver.quit()


def login(driver, url, user, password):
    """Logs in through the form: the submit button is clicked (or ENTER pressed) and the login
    counts only once the browser has left the login page, retried until it has."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    deadline = time.time() + 120
    driver.get(f"{url}/login/")
    while True:
        WebDriverWait(driver, 60).until(ec.element_to_be_clickable((By.ID, "username")))
        name = driver.find_element(By.ID, "username")
        name.clear()
        name.send_keys(user)
        pw = driver.find_element(By.ID, "password")
        pw.clear()
        pw.send_keys(password)
        buttons = driver.find_elements(By.CSS_SELECTOR, "button[type=submit], input[type=submit]")
        if buttons:
            buttons[0].click()
        else:
            pw.send_keys(Keys.ENTER)
        try:
            WebDriverWait(driver, 20).until(lambda d: "/login" not in d.current_url)
            return
        except TimeoutException:
            assert time.time() < deadline, "the login form never let us in"
            driver.get(f"{url}/login/")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8088")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="admin")
    ap.add_argument("--lake", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()
    sup = Superset(a.url, a.user, a.password)
    check_numbers(sup, a.lake)
    screenshot(a.url, a.user, a.password, a.screenshot, a.chromium, a.chromedriver)
    print("superset: OK")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"superset check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
