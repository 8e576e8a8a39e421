# Read by `uwsgi --build-plugin /path/to/cowguard`, from any directory. CMake builds the same
# cowguard_plugin.so from the same sources; see CMakeLists.txt.
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

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


# The builder compiles every file of GCC_LIST with one gcc command and one set of flags, so
# GCC_LIST holds only the C++ files (with C++17 and cowguard's warnings, as CMake gives them);
# the C files (CPython's internal headers: C11, PEP 7) are compiled here, into a static archive the
# builder links (an absolute path ending in .a is passed to gcc as it is).
WARNINGS = ['-Wall', '-Wextra', '-Wno-missing-field-initializers', '-Wunused-parameter']
INCLUDES = ['-I' + os.path.join(_here, 'include')] + _flags('--includes')
CFLAGS = ['-std=gnu++17'] + WARNINGS + INCLUDES + _pkg('--cflags')
LDFLAGS = []
LIBS = ['-lstdc++'] + _flags('--embed', '--ldflags') + _pkg('--libs')


def _sources():
    """plugin/sources.txt, the one source list (CMakeLists.txt reads it too), relative to _here."""
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


def _c_archive(c_sources):
    """The C files compiled with -std=gnu11 into one archive in a temporary directory (removed when
    the builder exits, after it has linked the plugin). Each command is printed, as the builder does."""
    out = tempfile.mkdtemp(prefix='cowguard-c-')
    atexit.register(shutil.rmtree, out, True)
    cc = os.environ.get('CC', 'gcc')
    objects = []
    for src in c_sources:
        obj = os.path.join(out, os.path.basename(src)[:-2] + '.o')
        cmd = [cc, '-std=gnu11', '-O2', '-g', '-fPIC'] + WARNINGS + INCLUDES + ['-c', os.path.join(_here, src),
                                                                                 '-o', obj]
        print(' '.join(cmd))
        if subprocess.call(cmd) != 0:
            raise SystemExit('cowguard uwsgiplugin.py: cannot compile %s' % src)
        objects.append(obj)
    archive = os.path.join(out, 'libcowguard_c.a')
    subprocess.check_call(['ar', 'rcs', archive] + objects)
    return archive


_all = _sources()
# Relative to _here: the builder prefixes each with the directory it was given. The archive last,
# so the C++ objects' references to it are resolved.
GCC_LIST = [s for s in _all if s.endswith('.cc')] + [_c_archive([s for s in _all if s.endswith('.c')])]
