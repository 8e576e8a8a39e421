"""Formatting shared by bench/run.py and bench/render_readme_table.py (stdlib only).

A results.json holds, per app, one entry per configuration; an entry is either a dict of figures
or {"skipped": reason} / {"error": message}. See bench/README.md for what each figure means.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

CONFIG_ORDER = ["stock", "skip-teardown", "app-freeze", "article-recipe", "cowguard", "cowguard-immortalize-false",
                "cowguard-gc-off"]

CONFIG_DESCRIPTIONS = {
    "stock": "python plugin only, app does nothing about the GC",
    "skip-teardown": "stock + --skip-atexit-teardown (no Py_Finalize, atexit handlers are dropped)",
    "app-freeze": "app calls gc.collect(); gc.freeze() at the end of import",
    "article-recipe": "app calls gc.set_threshold(0) and atexit.register(os._exit, 0) (Instagram's recipe)",
    "cowguard": "cowguard plugin loaded with its defaults",
    "cowguard-immortalize-false": "cowguard with --cowguard-immortalize false (Python >= 3.12: its immortal heap's share)",
    "cowguard-gc-off": "cowguard plugin with --cowguard-gc off",
    "cowguard-young": "cowguard plugin with --cowguard-gc young (thresholds 10000,20,100, collections inside requests)",
    "cowguard-between": "cowguard plugin with --cowguard-gc between (young inside requests, 700,10,10 after them)",
}

@dataclass(frozen=True)
class StopKeys:
    """The results.json keys of one stop phase (warm: the workers served load; cold: a few requests
    each). Written by run.py's stop_phase, read by the tables here."""
    name: str                          # in logs: "stop" or "cold stop"
    seconds: str                       # SIGTERM to the master's exit
    workers_exited_s: str              # SIGTERM to the last worker's exit
    peak_extra_mb: str                 # host memory (MemAvailable) spike
    peak_extra_pss_mb: str             # the same counted on the instance's own PSS
    pss_before_mb: str
    private_mb_per_worker_before: str
    foreign_cpu_pct: str
    exit_status: str
    error: str


WARM_STOP = StopKeys("stop", "stop_s", "stop_workers_exited_s", "stop_peak_extra_mb", "stop_peak_extra_pss_mb",
                     "stop_pss_before_mb", "stop_private_mb_per_worker_before", "stop_foreign_cpu_pct",
                     "stop_exit_status", "stop_error")
COLD_STOP = StopKeys("cold stop", "cold_stop_s", "cold_stop_workers_exited_s", "cold_stop_peak_extra_mb",
                     "cold_stop_peak_extra_pss_mb", "cold_stop_pss_before_mb", "cold_stop_private_mb_per_worker_before",
                     "cold_stop_foreign_cpu_pct", "cold_stop_exit_status", "cold_stop_error")


@dataclass(frozen=True)
class Column:
    header: str
    render: Callable[[dict], str]  # an entry's cell; "n/a" when not measured


def figure(key, spec):
    """A column of one figure, formatted with `spec`."""
    return lambda entry: fmt(entry.get(key), spec)


def figure_with(key, spec, second_key, second_spec):
    """A column of one figure and, in parentheses, a second one ("?" when that one is missing)."""
    def render(entry):
        first, second = entry.get(key), entry.get(second_key)
        if first is None:
            return "n/a"
        return "%s (%s)" % (spec % first, second_spec % second if second is not None else "?")
    return render


def stop_time(stop):
    """Seconds to the master's exit (to the last worker's in parentheses)."""
    return figure_with(stop.seconds, "%.2f", stop.workers_exited_s, "%.2f")


def stop_spike(stop):
    """The host memory spike of a stop in MB (the instance's own PSS spike in parentheses)."""
    return figure_with(stop.peak_extra_mb, "%.0f", stop.peak_extra_pss_mb, "%.0f")


COLUMNS = [
    Column("req/s (median of rounds)", figure("rps_interleaved", "{:.0f}")),
    Column("req/s (one load)", figure("rps", "{:.0f}")),
    Column("p50 ms", figure("p50_ms", "{:.1f}")),
    Column("p99 ms", figure("p99_ms", "{:.1f}")),
    Column("uWSGI CPU ms/req", figure("cpu_ms_per_request", "{:.2f}")),
    Column("private MB/worker", figure("private_mb_per_worker", "{:.1f}")),
    Column("copied MB/worker during load", figure("copied_mb_per_worker", "{:.1f}")),
    Column("shared MB/worker", figure("shared_mb_per_worker", "{:.1f}")),
    Column("total PSS MB", figure("pss_total_mb", "{:.0f}")),
    Column("minflt/req", figure("minflt_per_request", "{:.1f}")),
    Column("stop 8 workers s (last worker done)", stop_time(WARM_STOP)),
    Column("stop peak extra MB (own PSS)", stop_spike(WARM_STOP)),
    Column("/cycles growth MB/worker", figure("cycle_growth_mb", "{:.1f}")),
    Column("other CPU %", figure("foreign_cpu_pct", "{:.0f}")),
]

# shown only when measured (full mode): stopping 8 workers that served 2 requests each
COLD_COLUMNS = [
    Column("cold stop s (last worker done)", stop_time(COLD_STOP)),
    Column("cold stop peak extra MB (own PSS)", stop_spike(COLD_STOP)),
]

RATIO_KEYS = [
    ("rps_interleaved", "req/s (rounds)"),
    ("cpu_ms_per_request_interleaved", "CPU/req (rounds)"),
    ("rps", "req/s"),
    ("cpu_ms_per_request", "CPU/req"),
    ("p99_ms", "p99"),
    ("private_mb_per_worker", "private/worker"),
    ("copied_mb_per_worker", "copied/worker"),
    ("pss_total_mb", "total PSS"),
    ("minflt_per_request", "minflt/req"),
    (WARM_STOP.seconds, "stop time"),
    (WARM_STOP.workers_exited_s, "workers' exit"),
]


def fmt(value, spec):
    if value is None:
        return "n/a"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def ordered_configs(configs):
    names = [n for n in CONFIG_ORDER if n in configs]
    return names + sorted(n for n in configs if n not in names)


def compute_ratios(configs, subject="cowguard"):
    """cowguard's figure divided by each baseline's (rps > 1 is better; memory/time < 1 is better)."""
    out = {}
    mine = configs.get(subject) or {}
    if "rps" not in mine:
        return out
    for base in ("stock", "app-freeze", "article-recipe", "skip-teardown"):
        other = configs.get(base) or {}
        if "rps" not in other:
            continue
        r = {}
        for key, _ in RATIO_KEYS:
            a, b = mine.get(key), other.get(key)
            r[key] = round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
        out["%s_vs_%s" % (subject, base)] = r
    return out


def app_table(app_result):
    configs = app_result.get("configurations", {})
    measured = [configs[n] or {} for n in configs if "rps" in (configs[n] or {})]
    columns = list(COLUMNS) + list(COLD_COLUMNS)
    # a column nobody measured in this app (no rounds, no stop phase in this mode) is left out
    columns = [c for c in columns if any(c.render(e) != "n/a" for e in measured)] or list(COLUMNS)
    header = "| configuration | " + " | ".join(c.header for c in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [header, sep]
    for name in ordered_configs(configs):
        entry = configs[name] or {}
        if "skipped" in entry or "error" in entry:
            word = "skipped" if "skipped" in entry else "failed"
            lines.append("| %s | %s |" % (name, " | ".join([word] + [""] * (len(columns) - 1))))
            continue
        cells = [c.render(entry) for c in columns]
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return lines


def ratio_lines(app_result):
    ratios = compute_ratios(app_result.get("configurations", {})) or app_result.get("ratios") or {}
    lines = []
    for key, vals in ratios.items():
        parts = []
        for k, label in RATIO_KEYS:
            v = vals.get(k)
            if v is None:
                continue  # not measured in this mode (rounds, stop phases)
            parts.append("%s x%.2f" % (label, v))
        lines.append("- %s: %s" % (key.replace("_vs_", " vs ").replace("_", "-"), ", ".join(parts)))
    return lines


def cow_lines(app_result):
    """cowguard's copy-on-write report (mean per worker at the end of the load), one line per configuration."""
    lines = []
    for name in ordered_configs(app_result.get("configurations", {})):
        r = (app_result["configurations"][name] or {}).get("cow_report")
        if not r:
            continue
        if "error" in r:
            lines.append("- %s, copy-on-write report: %s" % (name, r["error"]))
            continue
        maps = r.get("mappings_mb_per_worker", {})
        kinds = sorted(maps.items(), key=lambda kv: -kv[1]["private_mb"])[:4]
        lines.append(
            "- %s, copy-on-write report (mean of %d workers): private MB by mapping %s; frozen objects on "
            "copied pages %s of %s (%.1f of %.1f MB); by type %s; by module %s" % (
                name, r.get("workers", 0),
                ", ".join("`%s` %.1f (shared %.1f)" % (k, v["private_mb"], v["shared_mb"]) for k, v in kinds),
                "{:,}".format(r.get("frozen_objects_on_copied_pages", 0)), "{:,}".format(r.get("frozen_objects", 0)),
                r.get("frozen_mb_on_copied_pages") or 0, r.get("frozen_mb") or 0,
                ", ".join("%s %.1f MB" % (t["type"], t["private_mb"]) for t in r.get("top_types", [])[:4]) or "-",
                ", ".join("`%s` %.2f MB" % (t["module"], t["private_mb"]) for t in r.get("top_modules", [])[:4])
                or "-"))
    return lines


def machine_line(results):
    m = results.get("machine", {})
    v = results.get("versions", {})
    return "%s, %s cores, %s GiB RAM, Linux %s; %s: uWSGI %s, Python %s, Django %s%s; %s mode, %s" % (
        m.get("cpu_model", "?"), m.get("cores", "?"), m.get("memory_gib", "?"), v.get("kernel", "?"),
        v.get("debian") or "Debian ?", v.get("uwsgi", "?"), v.get("python", "?"), v.get("django", "?"),
        ", graphite-web %s" % v["graphite_web"] if v.get("graphite_web") else "", results.get("mode", "?"),
        results.get("date", "?"))


def load_line(results):
    return "Load average (1, 5, 15 min) at start %s, at end %s: the machine is shared, other processes' CPU " \
           "share during each load is the `other CPU %%` column." % (
               "/".join("%.1f" % x for x in results.get("loadavg_at_start") or []) or "?",
               "/".join("%.1f" % x for x in results.get("loadavg_at_end") or []) or "?")


def markdown(results, heading_level=3, png_base=None):
    """One run's tables. png_base: where its PNGs are, relative to the document (None: no links)."""
    h = "#" * heading_level
    lines = []
    lines.append("Measured %s." % machine_line(results))
    lines.append("")
    lines.append("%d workers, `wrk -t2 -c8` on 127.0.0.1 sharing the same cores as uWSGI (so req/s is "
                 "relative, not absolute); stop time with %d workers. %s" % (
                     results.get("workers", 4), results.get("stop_workers", 8), load_line(results)))
    for app_name, app in results.get("apps", {}).items():
        d = app.get("durations", {})
        lines.append("")
        lines.append("%s %s" % (h, app_name))
        lines.append("")
        extra = ", stop-phase warm-up %ss" % d.get("warm_s") if d.get("stop") else ""
        if d.get("rounds"):
            extra += ", %d interleaved rounds of %ss" % (d["rounds"], d.get("round_s", 0))
        png = "%s-private-memory.png" % app_name
        link = " ([private memory over time](%s/%s))" % (png_base, png) if png_base is not None and png in \
            results.get("plots", []) else ""
        lines.append("%s; load %ss, /cycles %ss%s%s." % (
            app.get("description", ""), d.get("load_s", "?"), d.get("cycles_s", "?"), extra, link))
        lines.append("")
        lines.extend(app_table(app))
        below = ratio_lines(app) + cow_lines(app)
        skipped = {n: c.get("skipped") or c.get("error") for n, c in app.get("configurations", {}).items()
                   if c and ("skipped" in c or "error" in c)}
        for n, why in skipped.items():
            below.append("- %s not measured: %s" % (n, why))
        for note in app.get("notes", []):
            below.append("- note: %s" % note)
        for n in ordered_configs(app.get("configurations", {})):
            c = app["configurations"][n] or {}
            if c.get("requests") == 0:
                below.append("- note (%s): wrk counted no completed request during the measured load (no "
                             "error, no timeout: every request still in flight when it ended)%s" % (
                                 n, "; the interleaved rounds ran normally (%.0f req/s median)" % c["rps_interleaved"]
                                 if c.get("rps_interleaved") else ""))
            for note in c.get("notes", []):
                below.append("- note (%s): %s" % (n, note))
            for k in (WARM_STOP.error, COLD_STOP.error):
                if c.get(k):
                    below.append("- %s (%s): %s" % (k.replace("_", " "), n, c[k]))
        if below:
            lines.append("")
            lines.extend(below)
    return "\n".join(lines)


def runs_of(results):
    """{name: one run's results}: a merged results.json (bench/all.py) or a single run's."""
    if results.get("kind") == "merged":
        def python(item):
            v = (item[1].get("versions") or {}).get("python") or "0"
            return tuple(int(x) for x in v.split(".") if x.isdigit())
        return dict(sorted(results.get("runs", {}).items(), key=python))
    v = results.get("versions", {})
    return {v.get("debian") or "this system": results}


def _fig(entry, key, spec="{:.1f}"):
    return fmt((entry or {}).get(key), spec)


def _ratio(a, b):
    return "%.2f" % (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "n/a"


def _rps(entry):
    entry = entry or {}
    return entry.get("rps_interleaved") if entry.get("rps_interleaved") is not None else entry.get("rps")


def headline(results):
    """App x Python: private MB per worker and total PSS, cowguard against stock and app-freeze."""
    lines = [
        "| app | Python | private MB/worker: stock | app-freeze | cowguard | cowguard, immortalize off | "
        "cowguard x stock | x app-freeze | total PSS MB: stock | app-freeze | cowguard | cowguard x stock | "
        "x app-freeze | copied MB/worker: stock | cowguard | req/s cowguard x stock |",
        "|---|---|" + "---:|" * 14,
    ]
    runs = runs_of(results)
    apps = []
    for r in runs.values():
        apps += [a for a in r.get("apps", {}) if a not in apps]
    for app in apps:
        for r in runs.values():
            a = r.get("apps", {}).get(app)
            if not a:
                continue
            c = a.get("configurations", {})
            st, fr, cg, cgm = (c.get(n) or {} for n in ("stock", "app-freeze", "cowguard", "cowguard-immortalize-false"))
            p, q = "private_mb_per_worker", "pss_total_mb"
            lines.append("| %s | %s | %s | %s | **%s** | %s | **%s** | %s | %s | %s | **%s** | **%s** | %s | %s | %s | %s |" % (
                app, r.get("versions", {}).get("python", "?"),
                _fig(st, p), _fig(fr, p), _fig(cg, p), _fig(cgm, p), _ratio(cg.get(p), st.get(p)),
                _ratio(cg.get(p), fr.get(p)),
                _fig(st, q, "{:.0f}"), _fig(fr, q, "{:.0f}"), _fig(cg, q, "{:.0f}"), _ratio(cg.get(q), st.get(q)),
                _ratio(cg.get(q), fr.get(q)),
                _fig(st, "copied_mb_per_worker"), _fig(cg, "copied_mb_per_worker"), _ratio(_rps(cg), _rps(st))))
    return lines


def markdown_all(results, heading_level=3, png_base=None):
    """Headline table, then each run's detailed tables. png_base: the results directory relative to
    the document (each run's PNGs are in <png_base>/<run name>/)."""
    h = "#" * heading_level
    runs = runs_of(results)
    lines = ["%s Headline: every app on every Python" % h, ""]
    lines += headline(results)
    lines += ["", "Private = Private_Clean + Private_Dirty of each worker at the end of the load (copy-on-write "
              "copies land there); total PSS = master + workers; copied = shared MB per worker when the "
              "load began minus at its end; req/s from the interleaved rounds where measured, else one load "
              "each. Ratios below 1 are better for memory, above 1 for req/s."]
    for name, r in runs.items():
        v = r.get("versions", {})
        lines += ["", "%s Python %s (%s)" % (h, v.get("python", "?"), v.get("debian") or name), ""]
        base = "%s/%s" % (png_base, name) if png_base is not None and results.get("kind") == "merged" else png_base
        lines.append(markdown(r, heading_level + 1, base))
    return "\n".join(lines)


def newest_results(results_dir=RESULTS_DIR):
    candidates = sorted(p for p in Path(results_dir).glob("*/results.json") if p.is_file())
    return candidates[-1] if candidates else None


def load(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
