# Read by `uwsgi --build-plugin /path/to/cowguard`, from any directory. CMake builds the same
# cowguard_plugin.so from the same sources; see CMakeLists.txt.
import os
import subprocess
import sys

NAME = 'cowguard'


def _plugin_dir():
    """This file's directory. uWSGI's builder (uwsgiconfig.py build_plugin) exec()s this file's
    text without __file__ and with the cwd unchanged; what names the directory is its command
    line, `uwsgiconfig.py --extra-plugin DIR [NAME]` (`--plugin DIR` in uWSGI's own tree)."""
    if '__file__' in globals():
        return os.path.dirname(os.path.abspath(__file__))
    for flag in ('--extra-plugin', '--plugin'):
        if flag in sys.argv[:-1]:
            candidate = os.path.abspath(sys.argv[sys.argv.index(flag) + 1])
            if os.path.isfile(os.path.join(candidate, 'uwsgiplugin.py')):
                return candidate
    raise SystemExit('cowguard uwsgiplugin.py: cannot tell its own directory from %r' % sys.argv)


_here = _plugin_dir()
# The Python that uWSGI's python3 plugin links: tools/uwsgi-python-config is the one place that finds it.
_pyconf = subprocess.check_output([os.path.join(_here, 'tools', 'uwsgi-python-config')]).decode().strip()


def _flags(*args):
    return subprocess.check_output([_pyconf] + list(args)).decode().split()


def _pkg(*args):
    return subprocess.check_output(['pkg-config'] + list(args) + ['jansson']).decode().split()


# No -std= here: the builder compiles every file with one gcc command, and a C++ standard would be
# given to frozen_walk.c too. GCC's C++ default (gnu++17 since GCC 11) is enough;
# include/cowguard/options.h stops the build with a clear error on an older compiler.
CFLAGS = ['-I' + os.path.join(_here, 'include'), '-Wno-missing-field-initializers'] \
    + _flags('--includes') + _pkg('--cflags')
LDFLAGS = []
LIBS = ['-lstdc++'] + _flags('--embed', '--ldflags') + _pkg('--libs')


def _sources():
    """plugin/sources.txt, the one source list (CMakeLists.txt reads it too), relative to _here:
    the builder prefixes each with the directory it was given."""
    listing = os.path.join(_here, 'plugin', 'sources.txt')
    try:
        with open(listing) as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith('#')]
    except OSError:
        names = []
    sources = [os.path.join('plugin', n) for n in names]
    missing = [s for s in sources if not os.path.isfile(os.path.join(_here, s))]
    if not sources or missing:
        raise SystemExit('cowguard uwsgiplugin.py: no sources in %s/plugin (plugin/sources.txt: %s)'
                         % (_here, 'missing: ' + ', '.join(missing) if missing else 'no list'))
    return sources


GCC_LIST = _sources()
