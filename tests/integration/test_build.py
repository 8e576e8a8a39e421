"""Issue #12: the build finds the Python that uWSGI's python3 plugin links (tools/uwsgi-python-config),
on every Debian, and no build file names a Python version."""
import re
import subprocess
from pathlib import Path

from conftest import ROOT

TOOL = ROOT / "tools" / "uwsgi-python-config"


def tool(*args, env=None):
    return subprocess.run([str(TOOL), *args], capture_output=True, text=True, timeout=30, env=env)


def test_finds_the_python_the_uwsgi_plugin_runs(tmp_path):
    # What the python3 plugin itself runs: a script executed by uWSGI (--pyrun) reports its version.
    script = tmp_path / "version.py"
    script.write_text('import sys\nprint("embedded %d.%d" % sys.version_info[:2])\n')
    r = subprocess.run(["uwsgi", "--plugin", "python3", "--pyrun", str(script)], capture_output=True, text=True,
                       timeout=30)
    m = re.search(r"^embedded (\d+\.\d+)$", r.stdout + r.stderr, re.M)
    assert m, r.stdout + r.stderr
    python = tool("--python")
    config = tool()
    assert python.returncode == 0 and config.returncode == 0, python.stderr + config.stderr
    assert python.stdout.strip() == f"/usr/bin/python{m.group(1)}"
    assert config.stdout.strip() == f"/usr/bin/python{m.group(1)}-config"
    plugin_dir = tool("--plugin-dir").stdout.strip()
    assert plugin_dir.startswith("/") and (Path(plugin_dir) / "python3_plugin.so").exists(), plugin_dir


def test_says_what_is_missing():
    bad = tool(env={"PATH": "/usr/bin:/bin", "UWSGI": "/nonexistent/uwsgi"})
    assert bad.returncode == 1 and bad.stdout == ""
    assert "uwsgi-python-config: '/nonexistent/uwsgi --cflags' failed: install uwsgi-dev" in bad.stderr, bad.stderr
    unknown = tool("--pyhton")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "unknown argument '--pyhton'" in unknown.stderr, unknown.stderr


def test_no_build_file_names_a_python_version():
    for name in ("Makefile", "CMakeLists.txt", "uwsgiplugin.py", "tools/uwsgi-python-config"):
        text = (ROOT / name).read_text()
        assert not re.search(r"python3\.\d", text), name
