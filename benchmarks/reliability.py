"""Reliability figures: bad inputs, code-carrying files, failed writes, killed trainings.

    .venv/bin/python benchmarks/reliability.py [--kill-seeds 0,1] [--no-kills] [-v]

Runs the cases of tests/test_bad_input.py, tests/test_safe_load.py and tests/test_crash_safe.py
outside pytest, on the built-in synthetic dataset (12 train / 6 val / 4 test, 96x160), and
prints a markdown table: how many bad inputs were tried and how many ended cleanly (exit 2,
one ``error:`` line naming the file and the problem, no traceback), how many kills were
survived with nothing lost (``last.pt`` loadable, its step never going back, the finished run
equal bit for bit to an uninterrupted one). ``-v`` lists every case and how it ended.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision

from bddseg.bench import cpu_model

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    """A test module of tests/ as a plain module (its cases and helpers, no pytest run)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bad_inputs(base: Path, synth: Path, verbose: bool) -> tuple[Counter, Counter, list[str]]:
    """Every case of test_bad_input.CASES: per command, (tried, clean) for bad inputs and for
    inputs that must work; the failures."""
    t = _load("test_bad_input")
    os.environ["BDDSEG_CACHE"] = str(base / "cache")
    shared = t.make_shared(base / "shared", synth)
    tried, clean, failures = Counter(), Counter(), []
    setups, outcomes = {}, {}
    for i, name in enumerate(t.CASES):
        (base / str(i)).mkdir()
        setups[name] = t.CASES[name](t.World(base / str(i), **shared))
    for i, (name, s) in enumerate(setups.items()):
        if s.unreadable is None:
            os.environ["BDDSEG_CACHE"] = str(base / str(i) / "stats-cache")  # as in the tests
            outcomes[name] = t.run_case(s)
    unreadable = {n: s for n, s in setups.items() if s.unreadable is not None}
    try:
        outcomes.update(t.run_unreadable(unreadable, base))
    except t.CannotBlockReads as e:
        print(f"note: unreadable-file cases not run: {e}", file=sys.stderr)
    for name, o in outcomes.items():
        s = setups[name]
        kind = "must work" if s.expect in ("ok", "degrade") else "bad input"
        command = name.split(" | ")[0]
        problems = t.problems_with(s, o)
        tried[command, kind] += 1
        clean[command, kind] += not problems
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
        if verbose:
            lines = [ln for ln in o.err.splitlines() if ln.startswith(("error:", "warning:"))]
            shown = lines[-1] if lines else f"exit {o.rc}"
            print(f"{'ok  ' if not problems else 'FAIL'} {name}: {shown[:160]}")
    return tried, clean, failures


def code_in_files(base: Path, synth: Path) -> tuple[int, int, list[str]]:
    """Checkpoints and YAML files carrying code, through every command that reads them."""
    s = _load("test_safe_load")
    tried = refused = 0
    failures = []
    for i, payload in enumerate(s.PAYLOADS):
        for command in s.COMMANDS:
            tmp = base / f"ckpt{i}-{command.replace(' ', '_')}"
            tmp.mkdir()
            marker = tmp / "MARKER"
            evil = s._save(s._payloads(marker)[payload], tmp / "evil.pt")
            rc, err = s._cli(s._commands(evil, tmp, synth)[command])
            tried += 1
            ok = rc == 2 and "refused to load" in err and "Traceback" not in err
            refused += ok and not marker.exists()
            if not (ok and not marker.exists()):
                failures.append(f"{command} with {payload}: exit {rc}, ran: {marker.exists()}")
    for i, name in enumerate(s.YAML_PAYLOADS):
        tmp = base / f"yaml{i}"
        tmp.mkdir()
        marker = tmp / "MARKER"
        path = tmp / "evil.yaml"
        path.write_text(s._yaml_payloads(marker)[name])
        path.rename(tmp / "config.yaml")
        rc, err = s._cli(["report", tmp, "--out", tmp / "r.html"])
        tried += 1
        ok = rc == 2 and "Python tags are refused" in err and not marker.exists()
        refused += ok
        if not ok:
            failures.append(f"YAML {name}: exit {rc}")
    return tried, refused, failures


def failed_writes(base: Path, synth: Path) -> tuple[int, int, list[str]]:
    """Each writer x each failure point, fresh and over good files from a previous run."""
    c = _load("test_crash_safe")
    tried = clean = 0
    failures = []
    (base / "inputs").mkdir()
    inputs = c.make_inputs(base / "inputs", synth)
    for command in c.WRITERS:
        for where, nth in [*c.FAILURES, ("write", 2)]:
            existing = (where, nth) == ("write", 2)
            nth = 1 if command == "report" else nth
            out = base / f"out-{command.replace(' ', '_')}-{where}-{nth}-{existing}"
            if existing:
                c._run(c._argv(command, inputs, out))
            before = c._files(out) if out.exists() else {}
            tried += 1
            with pytest.MonkeyPatch.context() as mp:
                disk = c.FailingDisk(mp, where, nth)
                rc, err = c._run(c._argv(command, inputs, out))
            try:
                final = c._assert_failed_cleanly(rc, err, out, disk)
                if existing:
                    assert final.read_bytes() == before[final], "good file lost"
                else:
                    assert not final.exists()
                clean += 1
            except AssertionError as e:
                failures.append(f"{command}, {where} #{nth}: {str(e).splitlines()[0][:120]}")
    return tried, clean, failures


def kills(base: Path, synth: Path, seeds: list[int]) -> dict:
    """Reference run, then the kill/resume loop once per seed, then one Ctrl-C."""
    c = _load("test_crash_safe")
    config = base / "config.yaml"
    config.write_text(c.CONFIG % {"steps": c.STEPS})
    reference = base / "reference"
    p = subprocess.run(c.train_command(config, synth, reference), env=c.ENV,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr
    result = {"kills": [], "runs": 0, "identical": 0, "sigint": None}
    for seed in seeds:
        run = base / f"killed-{seed}"
        found, done = c.kill_and_resume(config, synth, run, seed=seed, log=lambda m: None)
        result["kills"] += found
        result["runs"] += 1
        try:
            assert done.returncode == 0, done.stderr[-300:]
            c.assert_same_run(reference, run)
            result["identical"] += 1
        except AssertionError as e:
            print(f"run {seed} differs: {e}", file=sys.stderr)
    run = base / "interrupted"
    cmd = c.train_command(config, synth, run)
    proc = subprocess.Popen(cmd, env=c.ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    while c.logged_step(run) < 3 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(2)
    _, err = proc.communicate(timeout=300)
    step = c.load_checkpoint(run / "last.pt")["step"]
    subprocess.run(cmd, env=c.ENV, capture_output=True, timeout=900)
    try:
        c.assert_same_run(reference, run)
        same = True
    except AssertionError:
        same = False
    result["sigint"] = (proc.returncode, "interrupted" in err, step, same)
    return result


def machine() -> str:
    cpu = cpu_model()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core {cpu}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}; load average {load}; "
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-seeds", default="0,1", help="one kill/resume loop per seed")
    ap.add_argument("--no-kills", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bddseg.synth import make_dataset

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bddseg-reliability-") as tmp:
        base = Path(tmp)
        synth = make_dataset(base / "synth", train=12, val=6, test=4, height=96, width=160,
                             seed=0, workers=1)  # fmt: skip
        (base / "bad").mkdir()
        with (
            contextlib.redirect_stdout(io.StringIO())
            if not args.verbose
            else contextlib.nullcontext()
        ):
            tried, clean, bad_fail = bad_inputs(base / "bad", synth, args.verbose)
        (base / "code").mkdir()
        code_tried, code_ok, code_fail = code_in_files(base / "code", synth)
        (base / "writes").mkdir()
        w_tried, w_ok, w_fail = failed_writes(base / "writes", synth)
        k = None
        if not args.no_kills:
            (base / "kills").mkdir()
            k = kills(base / "kills", synth, [int(s) for s in args.kill_seeds.split(",")])
    print(f"Machine: {machine()}; {time.perf_counter() - start:.0f} s in all.\n")
    print("| what | tried | ended as required |")
    print("|---|---|---|")
    for kind in ("bad input", "must work"):
        n = sum(v for (c, kk), v in tried.items() if kk == kind)
        m = sum(v for (c, kk), v in clean.items() if kk == kind)
        label = ("bad inputs (exit 2, one `error:` line naming file and problem, no traceback)"
                 if kind == "bad input" else
                 "inputs that must work (spaces/non-ASCII paths; report drawing around a broken file)")  # fmt: skip
        print(f"| {label} | {n} | **{m}** |")
        for command in sorted({c for c, kk in tried if kk == kind}):
            print(f"| &nbsp;&nbsp;`{command}` | {tried[command, kind]} | {clean[command, kind]} |")
    print(
        f"| checkpoints / YAML carrying code, through every command that reads them "
        f"(refused, nothing ran) | {code_tried} | **{code_ok}** |"
    )
    print(f"| failed writes: disk full mid-write, failed fsync, failed rename, over good files "
          f"(one line, exit 2, no `.tmp`, nothing half-written, old file kept) | {w_tried} | "
          f"**{w_ok}** |")  # fmt: skip
    if k:
        survived = sum(x.loadable and (x.step_before is None or (x.step_after or 0) >= x.step_before)
                       for x in k["kills"])  # fmt: skip
        mid = sum(x.landed.startswith("mid-write") for x in k["kills"])
        print(f"| SIGKILLs of a CPU training ({mid} of them mid-checkpoint-write), each followed "
              f"by `--resume` (last.pt loadable, step never back) | {len(k['kills'])} | "
              f"**{survived}** |")  # fmt: skip
        print(f"| killed runs finishing bit-identical to an uninterrupted run (weights, "
              f"optimizer state, log) | {k['runs']} | **{k['identical']}** |")  # fmt: skip
        rc, said, step, same = k["sigint"]
        print(
            f"| Ctrl-C (SIGINT) at step {step}: exit {rc}, 'interrupted' {said}, resumed "
            f"bit-identical {same} | 1 | **{int(rc == 130 and said and same)}** |"
        )
        where = Counter(x.landed.split(" (")[0].rsplit(" ", 1)[0] if x.landed.startswith("after")
                        else x.landed.split(" (")[0] for x in k["kills"])  # fmt: skip
        print("\nWhere the kills landed: " + ", ".join(f"{n} {w}" for w, n in where.items()))
    for title, items in (("bad inputs", bad_fail), ("code", code_fail), ("writes", w_fail)):
        if items:
            print(f"\nNot clean ({title}):")
            for item in items:
                print(f"- {item}")


if __name__ == "__main__":
    main()
