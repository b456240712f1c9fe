#!/usr/bin/env python3
"""test_explore.py -- natomic-lab explore on small explorations, checked from outside.

TAP 14 on stdout, one point per check. Bounded: three short explorations (about a
minute in all on 2 cores), never the whole order saga.

  1. basics/rollback-once-failed, memory mode, crash and error: every hit of the
     clean run becomes cells (only the actions each point defines), each cell is
     one TAP point and one JSON cell with the documented fields, every fault
     fired, the replay commands name the cell, the report has the matrix and a
     page per replay; exit 0.
  2. saga/confirmed-order, memory mode, one point (orders/create_order/after_reserve),
     crash and error: the crash breaks order_atomicity and no_pending_orders, which
     the story's lessons file lists, so it is an expected violation (an ok point);
     the error is consistent; exit 0. The cell's replay command replays it alone.
  3. The same story copied where it has no lessons file: the crash is now an
     unexpected violation, a not-ok point, and the exit status is 1.
  4. A lessons file that names durable mode is refused before anything runs.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

LAB, ROOT = sys.argv[1], sys.argv[2]
n = 0
failed = 0


def point(ok, what, detail=""):
    global n, failed
    n += 1
    failed += 0 if ok else 1
    print(f"{'ok' if ok else 'not ok'} {n} - {what}")
    if not ok and detail:
        print("  ---")
        print("  detail: " + json.dumps(detail[-3000:]))
        print("  ...")
    sys.stdout.flush()


def explore(*args, timeout=240):
    p = subprocess.run([LAB, "explore", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def tap_points(text):
    return [line for line in text.splitlines() if line.startswith("ok ") or line.startswith("not ok ")]


print("TAP version 14")
work = tempfile.mkdtemp(prefix="natomic-explore-test-")
try:
    # 1. a tiny story: every cell, the JSON, the TAP, the report
    js, rep = os.path.join(work, "one.json"), os.path.join(work, "one")
    rc, out, err = explore("--mode", "memory", "--actions", "crash,error", "--jobs", "2", "--json", js,
                           "--report", rep, "scenarios/basics/rollback-once-failed.yaml")
    point(rc == 0, "rollback-once-failed, memory, crash+error: exit 0", err)
    doc = json.load(open(js)) if os.path.exists(js) else {"cells": []}
    cells = doc.get("cells", [])
    points = tap_points(out)
    point(len(cells) >= 5, f"at least 5 cells (got {len(cells)})", json.dumps(cells)[:2000])
    point(len(points) == len(cells), f"one TAP point per cell ({len(points)} points, {len(cells)} cells)", out)
    point(out.rstrip().endswith(f"1..{len(points)}"), "the plan closes the TAP", out[-300:])
    fields = {"service", "point", "occurrence", "action", "mode", "verdict", "invariants_broken", "replay"}
    point(all(fields <= set(c) for c in cells), "every cell has " + ", ".join(sorted(fields)), json.dumps(cells)[:2000])
    point(all(c["verdict"] in ("consistent", "expected-violation", "violation") for c in cells),
          "every verdict is consistent, expected-violation or violation")
    point(all(c["verdict"] == "consistent" and c["invariants_broken"] == [] for c in cells),
          "the story states no invariant: every cell is consistent, nothing broken")
    point(all(c["fired"] for c in cells), "every injected fault fired at its hit", json.dumps(cells)[:2000])
    point(all(c["mode"] == "memory" and c["service"] == "conversions" for c in cells), "memory mode, conversions only")
    point(all(c["action"] in ("crash", "error") for c in cells), "only the actions asked for")
    point(not any(c["point"] == "natomic/before_reply" and c["action"] == "error" for c in cells),
          "no error at natomic/before_reply (docs/fault-points.md marks it '-')")
    point(any(c["point"] == "natomic/before_rollback" and c["action"] == "crash" for c in cells),
          "the rollback's own point is explored")
    point(all(f"--cell 'conversions-0:{c['point']}={c['action']}#{c['occurrence']}'" in c["replay"] and
              "--mode memory" in c["replay"] for c in cells), "each replay command names its cell and mode")
    index = os.path.join(rep, "index.html")
    html = open(index).read() if os.path.exists(index) else ""
    pages = [c.get("page", "") for c in cells]
    point(html.startswith("<!DOCTYPE html>") and "<script" not in html and "table class=\"matrix\"" in html,
          "the matrix page is there, self-contained, without a script")
    point(all(p and p in html and os.path.exists(os.path.join(rep, p)) for p in pages),
          "each cell links to its replay's page, and the page exists", json.dumps(pages))
    point("elapsed, ETA" in err and "cells (memory" in err, "progress lines with an ETA on stderr", err[-1500:])

    # 2. a lesson: the orchestrator crash between its steps, expected in memory mode
    js2 = os.path.join(work, "two.json")
    rc, out, err = explore("--mode", "memory", "--actions", "crash,error", "--points",
                           "orders/create_order/after_reserve", "--json", js2, "scenarios/saga/confirmed-order.yaml")
    point(rc == 0, "confirmed-order after_reserve, memory: exit 0 (the violation is a lesson)", err + out)
    cells = json.load(open(js2))["cells"] if os.path.exists(js2) else []
    crash = [c for c in cells if c["action"] == "crash"]
    error = [c for c in cells if c["action"] == "error"]
    point(len(cells) == 2 and len(crash) == 1 and len(error) == 1, "two cells: crash and error", json.dumps(cells))
    point(bool(crash) and crash[0]["verdict"] == "expected-violation" and
          set(crash[0]["invariants_broken"]) == {"order_atomicity", "no_pending_orders"},
          "the crash breaks order_atomicity and no_pending_orders, as the lesson says", json.dumps(crash))
    point(bool(error) and error[0]["verdict"] == "consistent", "the injected error is compensated: consistent",
          json.dumps(error))
    points = tap_points(out)
    point(len(points) == 2 and all(p.startswith("ok ") for p in points) and "expected violation" in out,
          "an expected violation is an ok TAP point that says so", out)
    if crash:
        replay = crash[0]["replay"].split()
        i = replay.index("--cell")
        rc, out, err = explore("--mode", "memory", "--cell", replay[i + 1].strip("'"), replay[-1])
        points = tap_points(out)
        point(rc == 0 and len(points) == 1 and "expected violation" in points[0],
              "the replay command replays that cell alone, with the same verdict", out + err)

    # 3. the same story without its lessons: an unexpected violation fails
    story = os.path.join(work, "saga", "confirmed-order.yaml")
    os.makedirs(os.path.dirname(story))
    shutil.copy(os.path.join(ROOT, "scenarios/saga/confirmed-order.yaml"), story)
    rc, out, err = explore("--mode", "memory", "--actions", "crash", "--points",
                           "orders/create_order/after_reserve", story)
    points = tap_points(out)
    point(rc == 1, f"without a lessons file the same crash fails the exploration (exit {rc})", err)
    point(len(points) == 1 and points[0].startswith("not ok ") and "violation" in points[0] and
          "order_atomicity" in out, "a not-ok point naming what broke", out)

    # 4. a lessons file for durable mode is refused
    with open(os.path.join(work, "saga", "confirmed-order.lessons.yaml"), "w") as f:
        f.write("lessons:\n  - {mode: durable, service: orders, point: natomic/client_send, action: crash,\n"
                "     breaks: [order_atomicity], reason: none}\n")
    rc, out, err = explore("--mode", "memory", "--actions", "crash", "--points", "natomic/client_send", story,
                           timeout=60)
    point(rc != 0 and "mode must be memory" in err and "confirmed-order.lessons.yaml:2" in err,
          "a durable lesson is refused with file:line and why", err)
finally:
    shutil.rmtree(work, ignore_errors=True)
print(f"1..{n}")
sys.exit(0)
