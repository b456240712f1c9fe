#!/usr/bin/env python3
"""run_mutants.py -- the lab measures itself: plant a bug, run the scenario suite, see it fail.

Each tests/mutants/NN-name.patch plants one realistic bug in the library or the example
services. For each one this script

  1. takes a scratch copy of the working tree as it is (tracked and untracked files, the
     uncommitted changes included; ignored files such as build/ and reports/ left out),
  2. applies the patch there (`git apply`),
  3. builds what the suite runs -- libnatomic, the five services, natomic-lab -- in the scratch
     copy's own build directory, configured with build/'s meson options plus -Dwerror=true
     (what CI uses), so an unused variable is a build failure, not a mutant,
  4. runs the scenario suite alone (`natomic-lab run scenarios`, from the scratch copy),
  5. reverts the patch.

Verdicts: "killed" (the suite failed, and the stories that failed fail again when rerun alone
under the same mutant), "unsteady" (the suite failed once, but those stories passed when rerun:
a timing accident or a kill that depends on luck -- not counted as killed), "survived" (the
suite passed: a missing oracle or a missing story), "build failed", "patch failed".

Before any mutant, the unmutated copy is built and the suite run once (the baseline): a suite
that fails on its own would "kill" every mutant. The score is killed / (killed + unsteady +
survived); the exit status is 0 only when every mutant was killed (100%), 1 otherwise, 2 when
the baseline or the set-up failed, or on bad usage.

Scratch copies live in a temporary folder (under $TMPDIR), one per job, removed at the end
(--keep to keep them); each suite runs with TMPDIR inside its copy, in its own session, and is
stopped (SIGTERM, then SIGKILL) at the time limit. Logs go to reports/mutants/ (ignored by git):
per mutant its build log, the suite's TAP and progress, and results.tsv for the run.

Python 3 standard library only.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MUTANT_DIR = os.path.join(ROOT, "tests", "mutants")
SKIP_PREFIXES = ("tests/interop/node_modules/",)
# What the suite runs: natomic-lab and the service binaries it starts (../services/<name>/<name>).
TARGET_FOLDERS = ("faultinject", "services")
CONFIRM_STORIES = 5  # at most this many failing stories are rerun to confirm a kill
STOP = threading.Event()  # set on Ctrl-C or SIGTERM: workers leave their mutant as it is

USAGE_EXTRA = """
Each tests/mutants/NN-name.patch plants one bug. Per mutant: a scratch copy of the working
tree, the patch applied, a -Werror build, the scenario suite alone. Verdicts: killed (the
suite failed, and its failing stories fail again when rerun), unsteady (they passed on the
rerun), survived, build failed, patch failed. Exit 0 only when every mutant is killed.

Jobs: each job has its own scratch copy and build, and its suite plays cores / N stories at
once (natomic-lab run --jobs; one job leaves natomic-lab's default, two stories per core). The
scenario suite is timing sensitive: 2 jobs on a 2-core machine may add noise (slower
stories, unsteady verdicts); 1 is the reference. With one job a mutant takes 60 to 180 s (a killed one waits out its failing
stories' `eventually`, then reruns them); 32 mutants took 33 min on 2 cores.
"""


def say(*parts):
    print("mutate:", *parts, file=sys.stderr, flush=True)


# ---- the mutants -----------------------------------------------------------------------------


class Mutant:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[: -len(".patch")] if path.endswith(".patch") else os.path.basename(path)
        self.header = read_header(path)
        self.verdict = None
        self.detail = ""
        self.stories = []
        self.seconds = 0.0


def read_header(path):
    """The free text before the first `diff --git` line, comment marks removed."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("diff --git") or line.startswith("--- "):
                break
            text = line.rstrip("\n")
            text = re.sub(r"^#\s?", "", text)
            lines.append(text)
    return " ".join(" ".join(lines).split())


def find_mutants(args):
    if args.patches:
        base = os.environ.get("LAB_CALLER_DIR") or os.getcwd()  # ./lab moves to the repository root
        paths = [os.path.abspath(os.path.join(base, p)) for p in args.patches]
        for p in paths:
            if not os.path.isfile(p):
                raise SystemExit(f"mutate: no such patch: {p}")
    else:
        paths = sorted(
            os.path.join(MUTANT_DIR, f) for f in os.listdir(MUTANT_DIR) if f.endswith(".patch")
        )
    mutants = [Mutant(p) for p in paths]
    if args.filter:
        mutants = [m for m in mutants if args.filter in m.name]
    return mutants


# ---- scratch copies --------------------------------------------------------------------------


def working_tree_files():
    out = subprocess.run(
        ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode()
    files = []
    for rel in sorted(set(p for p in out.split("\0") if p)):
        if rel.startswith(SKIP_PREFIXES):
            continue
        if os.path.lexists(os.path.join(ROOT, rel)):  # a file deleted in the working tree stays deleted
            files.append(rel)
    return files


def copy_tree(files, src, dst):
    for rel in files:
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if os.path.islink(s):
            os.symlink(os.readlink(s), d)
        else:
            shutil.copy2(s, d)


def meson_options():
    """build/'s command-line options (meson keeps them in meson-private/cmd_line.txt), and -Werror."""
    opts = []
    path = os.path.join(ROOT, "build", "meson-private", "cmd_line.txt")
    if os.path.isfile(path):
        section = None
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1]
                elif section == "options" and "=" in line:
                    key, value = (s.strip() for s in line.split("=", 1))
                    if key != "werror":
                        opts.append(f"-D{key}={value}")
    opts.append("-Dwerror=true")
    return opts


def git_env(slot_dir):
    env = dict(os.environ)
    # git apply must treat the scratch copy as plain files, never as part of a repository above it.
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(slot_dir)
    return env


def suite_env(tmp):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("NATOMIC_") and k not in ("NATOMIC_NATS_SERVER", "NATOMIC_LOG"))}
    env.pop("NATS_URL", None)
    env["TMPDIR"] = tmp
    return env


# ---- processes -------------------------------------------------------------------------------


class Run:
    """A child in its own session; stoppable as a whole at its time limit or on an interrupt."""

    live = set()
    lock = threading.Lock()

    def __init__(self, argv, cwd, env, stdout, stderr):
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        with Run.lock:
            Run.live.add(self)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            self.stop()
            return self.proc.returncode, True
        finally:
            with Run.lock:
                Run.live.discard(self)

    def stop(self):
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # natomic-lab SIGKILLs its children on SIGTERM
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    @classmethod
    def stop_all(cls):
        with cls.lock:
            runs = list(cls.live)
        for r in runs:
            r.stop()


def sweep_processes(under):
    """Kills what is left of our own children: processes whose binary or arguments lie under `under`."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if exe.startswith(under + "/") or (under + "/") in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# ---- one job's scratch copy ------------------------------------------------------------------


NOT_OK = re.compile(r"^not ok \d+ - (.*?)(?::|$)")


def failing_stories(tap_path):
    stories = []
    try:
        with open(tap_path, errors="replace") as f:
            for line in f:
                m = NOT_OK.match(line)
                if m and m.group(1) not in stories:
                    stories.append(m.group(1))
    except OSError:
        pass
    return stories


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Slot:
    def __init__(self, index, scratch, pristine, files, opts, logs):
        self.index = index
        self.dir = os.path.join(scratch, f"job-{index}")
        self.build = os.path.join(self.dir, "build")
        self.pristine = pristine
        self.files = files
        self.opts = opts
        self.logs = logs
        self.targets = []
        self.suite_jobs = 0  # natomic-lab run's own default: two stories per core
        self.status = "setting up"
        self.progress_file = None

    def setup(self, timeout):
        copy_tree(self.files, self.pristine, self.dir)
        log = os.path.join(self.logs, f"setup-job-{self.index}.log")
        with open(log, "w") as out:
            r = Run(["meson", "setup", self.build] + self.opts, self.dir, os.environ, out, subprocess.STDOUT)
            rc, late = r.wait(timeout)
        if rc != 0 or late:
            return f"meson setup failed (see {log}):\n{tail(log)}"
        self.targets = self.find_targets()
        if not self.targets:
            return "meson knows no executable under faultinject/ or services/"
        return None

    def find_targets(self):
        import json
        out = subprocess.run(["meson", "introspect", "--targets", self.build], capture_output=True, text=True)
        if out.returncode != 0:
            return []
        targets = []
        for t in json.loads(out.stdout):
            if t.get("type") != "executable":
                continue
            rel = os.path.relpath(t["defined_in"], self.dir)
            if rel.split(os.sep)[0] in TARGET_FOLDERS:
                targets += [os.path.relpath(f, self.build) for f in t["filename"]]
        return targets

    def compile(self, log, timeout):
        with open(log, "w") as out:
            r = Run(["ninja", "-C", self.build] + self.targets, self.dir, os.environ, out, subprocess.STDOUT)
            rc, late = r.wait(timeout)
        if late:
            return "the build took longer than the time limit"
        if rc != 0:
            text = re.sub(r"\x1b\[[0-9;]*m", "", open(log, errors="replace").read())  # colour codes
            errors = [line.strip() for line in text.splitlines() if "error:" in line]
            return (errors[0] if errors else f"ninja exited {rc}")[:300]
        return None

    def suite(self, tap, progress, timeout, stories=None):
        """Runs the scenario suite (or some stories); returns (exit status, hit the time limit)."""
        if STOP.is_set():
            return 1, True
        tmp = os.path.join(self.dir, "tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        argv = [os.path.join(self.build, "faultinject", "natomic-lab"), "run"] + (stories or ["scenarios"])
        if self.suite_jobs:
            argv += ["--jobs", str(self.suite_jobs)]  # the cores shared between the mutants at once
        self.progress_file = progress
        try:
            with open(tap, "w") as out, open(progress, "w") as err:
                r = Run(argv, self.dir, suite_env(tmp), out, err)
                rc, late = r.wait(timeout)
        finally:
            self.progress_file = None
            sweep_processes(self.dir)
            shutil.rmtree(tmp, ignore_errors=True)
        return rc, late

    def apply(self, patch):
        env = git_env(self.dir)
        check = subprocess.run(["git", "apply", "--check", patch], cwd=self.dir, env=env,
                               capture_output=True, text=True)
        if check.returncode != 0:
            return None, " ".join(check.stderr.split())[:300]
        stat = subprocess.run(["git", "apply", "--numstat", "-z", patch], cwd=self.dir, env=env,
                              capture_output=True, text=True, check=True).stdout
        touched = [rec.split("\t", 2)[2] for rec in stat.split("\0") if rec.count("\t") >= 2]
        subprocess.run(["git", "apply", patch], cwd=self.dir, env=env, check=True, capture_output=True)
        return touched, None

    def revert(self, touched):
        """Puts back the pristine files -- with a new mtime, so ninja rebuilds what they feed."""
        for rel in touched:
            src, dst = os.path.join(self.pristine, rel), os.path.join(self.dir, rel)
            if os.path.exists(src):
                shutil.copyfile(src, dst)
            elif os.path.exists(dst):
                os.remove(dst)


def story_files(slot, stories):
    files = []
    for s in stories:
        for ext in (".yaml", ".yml"):
            path = os.path.join("scenarios", s + ext)
            if os.path.isfile(os.path.join(slot.dir, path)):
                files.append(path)
                break
        else:
            if s.endswith((".yaml", ".yml")):  # an invalid file is named by its path
                files.append(s)
    return files


def judge(slot, m, args):
    logs = os.path.join(args.report, m.name)
    os.makedirs(logs, exist_ok=True)
    t0 = time.monotonic()
    touched, err = slot.apply(m.path)
    if touched is None:
        m.verdict, m.detail = "patch failed", err
        return
    try:
        deadline = t0 + args.timeout
        slot.status = f"{m.name}: building"
        err = slot.compile(os.path.join(logs, "build.log"), max(1, deadline - time.monotonic()))
        if err:
            m.verdict, m.detail = "build failed", err
            return
        slot.status = f"{m.name}: suite"
        tap, progress = os.path.join(logs, "tap.txt"), os.path.join(logs, "progress.txt")
        rc, late = slot.suite(tap, progress, max(1, deadline - time.monotonic()))
        m.stories = failing_stories(tap)
        if rc == 0 and not late:
            m.verdict = "survived"
            return
        if late:
            m.verdict, m.detail = "killed", f"time limit ({args.timeout} s) reached"
            return
        if not m.stories:
            m.verdict, m.detail = "killed", f"natomic-lab exited {rc} with no failed check: {tail(progress, 1).strip()}"
            return
        if args.no_confirm:
            m.verdict = "killed"
            return
        # Confirm: the failing stories, alone, under the same mutant.
        slot.status = f"{m.name}: confirming"
        files = story_files(slot, m.stories[:CONFIRM_STORIES])
        rc2, late2 = slot.suite(os.path.join(logs, "confirm-tap.txt"), os.path.join(logs, "confirm-progress.txt"),
                                min(args.timeout, 300), files)
        if rc2 != 0 or late2 or not files:
            m.verdict = "killed"
        else:
            m.verdict = "unsteady"
            m.detail = "the failing stories passed when rerun alone under the mutant"
    finally:
        slot.revert(touched)
        m.seconds = time.monotonic() - t0


# ---- the run ---------------------------------------------------------------------------------


def summary_line(m, width):
    head = f"{m.name:<{width}} {m.verdict:<12} {m.seconds:5.0f} s"
    if m.verdict in ("killed", "unsteady") and m.stories:
        shown = ", ".join(m.stories[:3]) + (f" (+{len(m.stories) - 3} more)" if len(m.stories) > 3 else "")
        head += f"  by {shown}"
    if m.detail:
        head += f"  [{m.detail}]"
    return head


class Status(threading.Thread):
    """On a terminal: one line, rewritten every second, with what each job is doing."""

    def __init__(self, slots):
        super().__init__(daemon=True)
        self.slots = slots
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.enabled = sys.stderr.isatty()

    def run(self):
        while self.enabled and not self.done.wait(1.0):
            parts = []
            for s in self.slots:
                text = s.status
                if s.progress_file:
                    last = tail(s.progress_file, 1).strip()
                    m = re.match(r"^\[(\d+/\d+)\]", last)
                    if m:
                        text += f" {m.group(1)}"
                parts.append(text)
            with self.lock:
                sys.stderr.write("\r\033[K" + " | ".join(parts)[: shutil.get_terminal_size().columns - 1])
                sys.stderr.flush()

    def print(self, line):
        with self.lock:
            if self.enabled:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            print(line, flush=True)


def main():
    p = argparse.ArgumentParser(
        prog="./lab mutate",
        usage="./lab mutate [--jobs N] [--filter TEXT] [--list] [--build-only] [--timeout S] [--keep] [PATCH...]",
        description="Measure the lab: apply each mutant of tests/mutants/ to a scratch copy of the working tree, "
                    "build, run the scenario suite, and score the kills.",
        epilog=USAGE_EXTRA, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patches", nargs="*", metavar="PATCH", help="run these patch files instead of tests/mutants/*.patch")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="mutants at once, each in its own copy (default 1)")
    p.add_argument("--filter", metavar="TEXT", help="only the mutants whose file name contains TEXT")
    p.add_argument("--list", action="store_true", help="list the mutants and what each breaks, run nothing")
    p.add_argument("--build-only", action="store_true",
                   help="check that each mutant applies and builds with -Werror; run no suite")
    p.add_argument("--timeout", type=int, default=600, metavar="S",
                   help="time limit per mutant, build and suite (default 600 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the suite run on the unmutated copy")
    p.add_argument("--no-confirm", action="store_true", help="count a failed suite as a kill without rerunning "
                   "its failing stories")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies (their path is printed)")
    p.add_argument("--report", default=os.path.join(ROOT, "reports", "mutants"), metavar="DIR",
                   help="where the logs go (default reports/mutants)")
    args = p.parse_args()
    if args.jobs < 1 or args.timeout < 1:
        p.error("--jobs and --timeout must be at least 1")

    mutants = find_mutants(args)
    if args.list:
        width = max((len(m.name) for m in mutants), default=0)
        for m in mutants:
            print(f"{m.name:<{width}}  {m.header}")
        return 0
    if not mutants:
        say("no mutant matches")
        return 2

    started = time.monotonic()
    shutil.rmtree(args.report, ignore_errors=True)
    os.makedirs(args.report)
    scratch = tempfile.mkdtemp(prefix="natomic-mutants.")
    pristine = os.path.join(scratch, "pristine")
    jobs = min(args.jobs, len(mutants))
    slots = []

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    status = Status(slots)
    queue_holder, qlock_holder, workers_holder = [[]], [threading.Lock()], [[]]
    try:
        files = working_tree_files()
        copy_tree(files, ROOT, pristine)
        opts = meson_options()
        say(f"{len(mutants)} mutant{'s' if len(mutants) != 1 else ''}, {jobs} job{'s' if jobs != 1 else ''}, "
            f"scratch copies of the working tree ({len(files)} files) in {scratch}")
        say(f"meson setup {' '.join(opts)}; logs in {os.path.relpath(args.report, os.getcwd())}/")
        slots.extend(Slot(i, scratch, pristine, files, opts, args.report) for i in range(jobs))
        if jobs > 1:
            for s in slots:
                s.suite_jobs = max(1, (os.cpu_count() or 1) // jobs)
        errors = [None] * jobs

        def setup(i):
            errors[i] = slots[i].setup(args.timeout) or slots[i].compile(
                os.path.join(args.report, f"baseline-build-job-{i}.log"), args.timeout)
            slots[i].status = "ready"

        threads = [threading.Thread(target=setup, args=(i,)) for i in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(errors):
            say(f"the unmutated copy does not build: {next(e for e in errors if e)}")
            return 2
        say(f"built the unmutated copy ({time.monotonic() - started:.0f} s)")

        if not args.build_only and not args.no_baseline:
            say("baseline: the scenario suite on the unmutated copy")
            t0 = time.monotonic()
            tap = os.path.join(args.report, "baseline-tap.txt")
            rc, late = slots[0].suite(tap, os.path.join(args.report, "baseline-progress.txt"), args.timeout)
            if rc != 0 or late:
                bad = failing_stories(tap)
                say("the suite fails without any mutant" + (f" (time limit {args.timeout} s)" if late else "")
                    + (": " + ", ".join(bad) if bad else "") + f"; see {tap}. Fix that first.")
                return 2
            say(f"baseline: every check passed ({time.monotonic() - t0:.0f} s)")

        queue = list(mutants)
        qlock = threading.Lock()
        queue_holder[0], qlock_holder[0] = queue, qlock
        done = [0]
        width = max(len(m.name) for m in mutants)

        def worker(slot):
            while True:
                with qlock:
                    if not queue:
                        slot.status = "done"
                        return
                    m = queue.pop(0)
                if args.build_only:
                    t0 = time.monotonic()
                    touched, err = slot.apply(m.path)
                    if touched is None:
                        m.verdict, m.detail = "patch failed", err
                    else:
                        logs = os.path.join(args.report, m.name)
                        os.makedirs(logs, exist_ok=True)
                        err = slot.compile(os.path.join(logs, "build.log"), args.timeout)
                        m.verdict, m.detail = ("build failed", err) if err else ("builds", "")
                        slot.revert(touched)
                    m.seconds = time.monotonic() - t0
                else:
                    try:
                        judge(slot, m, args)
                    except Exception:
                        if STOP.is_set():
                            return  # interrupted: the copy is being removed under us
                        raise
                if STOP.is_set():
                    return
                with qlock:
                    done[0] += 1
                    n = done[0]
                status.print(f"[{n:>{len(str(len(mutants)))}}/{len(mutants)}] {summary_line(m, width)}")

        status.start()
        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in slots]
        workers_holder[0] = threads
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status.done.set()
    except KeyboardInterrupt:
        status.done.set()
        STOP.set()
        with qlock_holder[0]:
            del queue_holder[0][:]
        say("interrupted: stopping the suites and removing the scratch copies")
        Run.stop_all()
        for t in workers_holder[0]:
            t.join(timeout=30)  # each puts its files back once its suite is stopped
        sweep_processes(scratch)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        return 2
    finally:
        if not args.keep and os.path.isdir(scratch):
            sweep_processes(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
        elif args.keep:
            say(f"kept the scratch copies in {scratch}")

    with open(os.path.join(args.report, "results.tsv"), "w") as f:
        f.write("mutant\tverdict\tseconds\tstories\tdetail\n")
        for m in mutants:
            f.write(f"{m.name}\t{m.verdict}\t{m.seconds:.0f}\t{','.join(m.stories)}\t{m.detail}\n")

    total = time.monotonic() - started
    if args.build_only:
        bad = [m for m in mutants if m.verdict != "builds"]
        print(f"\n{len(mutants) - len(bad)} of {len(mutants)} mutants apply and build with -Werror "
              f"({total:.0f} s)")
        return 1 if bad else 0
    scored = [m for m in mutants if m.verdict in ("killed", "unsteady", "survived")]
    killed = [m for m in scored if m.verdict == "killed"]
    broken = [m for m in mutants if m not in scored]
    pct = 100.0 * len(killed) / len(scored) if scored else 0.0
    print(f"\nkilled {len(killed)} of {len(scored)} ({pct:.0f}%) in {total / 60:.1f} min")
    if broken:
        print(f"not scored: {len(broken)} mutant{'s' if len(broken) != 1 else ''} that did not apply or build: "
              + ", ".join(f"{m.name} ({m.verdict})" for m in broken))
    for kind in ("survived", "unsteady"):
        these = [m for m in scored if m.verdict == kind]
        if these:
            print(f"\n{kind} ({len(these)}): each is a missing oracle or a missing story" if kind == "survived"
                  else f"\n{kind} ({len(these)}): killed once, not on the rerun of the failing stories")
            for m in these:
                print(f"  {m.name}: {m.header}")
    print(f"\nlogs: {args.report}/<mutant>/ (build.log, tap.txt, progress.txt), results.tsv")
    return 0 if scored and len(killed) == len(scored) and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
