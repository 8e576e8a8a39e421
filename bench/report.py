"""Formatting shared by bench/run.py and bench/render_readme_table.py (stdlib only).

A results.json holds, per app, one entry per configuration; an entry is either a dict of figures
or {"skipped": reason} / {"error": message}. See bench/README.md for what each figure means.
"""
import json
import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

CONFIG_ORDER = ["stock", "skip-teardown", "app-freeze", "article-recipe", "cowguard", "cowguard-gc-off"]

CONFIG_DESCRIPTIONS = {
    "stock": "python plugin only, app does nothing about the GC",
    "skip-teardown": "stock + --skip-atexit-teardown (no Py_Finalize, atexit handlers are dropped)",
    "app-freeze": "app calls gc.collect(); gc.freeze() at the end of import",
    "article-recipe": "app calls gc.set_threshold(0) and atexit.register(os._exit, 0) (Instagram's recipe)",
    "cowguard": "cowguard plugin loaded with its defaults",
    "cowguard-gc-off": "cowguard plugin with --cowguard-gc off",
    "cowguard-young": "cowguard plugin with --cowguard-gc young (thresholds 10000,20,100, collections inside requests)",
    "cowguard-between": "cowguard plugin with --cowguard-gc between (young inside requests, 700,10,10 after them)",
}

# (key, column header, format)
COLUMNS = [
    ("rps_interleaved", "req/s (median of rounds)", "{:.0f}"),
    ("rps", "req/s (one load)", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("cpu_ms_per_request", "uWSGI CPU ms/req", "{:.2f}"),
    ("private_mb_per_worker", "private MB/worker", "{:.1f}"),
    ("shared_mb_per_worker", "shared MB/worker", "{:.1f}"),
    ("rss_mb_per_worker", "RSS MB/worker", "{:.1f}"),
    ("pss_total_mb", "total PSS MB", "{:.0f}"),
    ("minflt_per_request", "minflt/req", "{:.1f}"),
    ("stop_s", "stop 8 workers s (last worker done)", "stop"),
    ("stop_peak_extra_mb", "stop peak extra MB (own PSS)", "spike:stop"),
    ("cycle_growth_mb", "/cycles growth MB/worker", "{:.1f}"),
    ("foreign_cpu_pct", "other CPU %", "{:.0f}"),
]

# shown only when measured (full mode): stopping 8 workers that served 2 requests each
COLD_COLUMNS = [
    ("cold_stop_s", "cold stop s (last worker done)", "cold_stop"),
    ("cold_stop_peak_extra_mb", "cold stop peak extra MB (own PSS)", "spike:cold_stop"),
]

RATIO_KEYS = [
    ("rps_interleaved", "req/s (rounds)"),
    ("cpu_ms_per_request_interleaved", "CPU/req (rounds)"),
    ("rps", "req/s"),
    ("cpu_ms_per_request", "CPU/req"),
    ("p99_ms", "p99"),
    ("private_mb_per_worker", "private/worker"),
    ("pss_total_mb", "total PSS"),
    ("minflt_per_request", "minflt/req"),
    ("stop_s", "stop time"),
    ("stop_workers_exited_s", "workers' exit"),
]


def cell(entry, key, spec):
    if spec.startswith("spike:"):
        host, own = entry.get(key), entry.get(spec[6:] + "_peak_extra_pss_mb")
        if host is None:
            return "n/a"
        return "%.0f (%s)" % (host, "%.0f" % own if own is not None else "?")
    if spec in ("stop", "cold_stop"):
        total, done = entry.get(spec + "_s"), entry.get(spec + "_workers_exited_s")
        if total is None:
            return "n/a"
        return "%.2f (%s)" % (total, "%.2f" % done if done is not None else "?")
    return fmt(entry.get(key), spec)


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
    columns = list(COLUMNS)
    if not any((c or {}).get("rps_interleaved") is not None for c in configs.values()):
        columns = [c for c in columns if c[0] != "rps_interleaved"]  # quick mode, django: one load only
    if any((c or {}).get("cold_stop_s") is not None for c in configs.values()):
        columns += COLD_COLUMNS
    header = "| configuration | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [header, sep]
    for name in ordered_configs(configs):
        entry = configs[name] or {}
        if "skipped" in entry or "error" in entry:
            word = "skipped" if "skipped" in entry else "failed"
            lines.append("| %s | %s |" % (name, " | ".join([word] + [""] * (len(columns) - 1))))
            continue
        cells = [cell(entry, k, f) for k, _, f in columns]
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return lines


def ratio_lines(app_result):
    ratios = compute_ratios(app_result.get("configurations", {})) or app_result.get("ratios") or {}
    lines = []
    for key, vals in ratios.items():
        parts = []
        for k, label in RATIO_KEYS:
            v = vals.get(k)
            if v is None and k.endswith("_interleaved"):
                continue  # quick mode has no rounds
            parts.append("%s x%s" % (label, "n/a" if v is None else "%.2f" % v))
        lines.append("- %s: %s" % (key.replace("_vs_", " vs ").replace("_", "-"), ", ".join(parts)))
    return lines


def machine_line(results):
    m = results.get("machine", {})
    v = results.get("versions", {})
    return "%s, %s cores, %s GiB RAM, Linux %s; uWSGI %s, Python %s, Django %s; %s mode, %s" % (
        m.get("cpu_model", "?"), m.get("cores", "?"), m.get("memory_gib", "?"), v.get("kernel", "?"),
        v.get("uwsgi", "?"), v.get("python", "?"), v.get("django", "?"), results.get("mode", "?"),
        results.get("date", "?"))


def markdown(results, heading_level=3):
    h = "#" * heading_level
    lines = []
    lines.append("Measured %s." % machine_line(results))
    lines.append("")
    lines.append("%d workers, `wrk -t2 -c8` on 127.0.0.1 sharing the same cores as uWSGI (so req/s is "
                 "relative, not absolute); stop time with %d workers." % (
                     results.get("workers", 4), results.get("stop_workers", 8)))
    for app_name, app in results.get("apps", {}).items():
        d = app.get("durations", {})
        lines.append("")
        lines.append("%s %s" % (h, app_name))
        lines.append("")
        lines.append("%s; load %ss, /cycles %ss, stop-phase warm-up %ss." % (
            app.get("description", ""), d.get("load_s", "?"), d.get("cycles_s", "?"), d.get("warm_s", "?")))
        lines.append("")
        lines.extend(app_table(app))
        rl = ratio_lines(app)
        if rl:
            lines.append("")
            lines.extend(rl)
        skipped = {n: c.get("skipped") or c.get("error") for n, c in app.get("configurations", {}).items()
                   if c and ("skipped" in c or "error" in c)}
        for n, why in skipped.items():
            lines.append("- %s not measured: %s" % (n, why))
        for note in app.get("notes", []):
            lines.append("- note: %s" % note)
        for n in ordered_configs(app.get("configurations", {})):
            c = app["configurations"][n] or {}
            for note in c.get("notes", []):
                lines.append("- note (%s): %s" % (n, note))
            for k in ("stop_error", "cold_stop_error"):
                if c.get(k):
                    lines.append("- %s (%s): %s" % (k.replace("_", " "), n, c[k]))
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
