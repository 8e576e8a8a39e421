# Read by `uwsgi --build-plugin .` (run it from this directory). CMake builds the same
# cowguard_plugin.so from the same sources; see CMakeLists.txt.
import glob
import os
import subprocess

NAME = 'cowguard'

_here = os.path.dirname(os.path.abspath(glob.glob('uwsgiplugin.py')[0])) if glob.glob('uwsgiplugin.py') else '.'
# The Python that Debian's python3 plugin links (never the python3 first on PATH).
_pyconf = '/usr/bin/python3.11-config'


def _flags(*args):
    return subprocess.check_output([_pyconf] + list(args)).decode().split()


def _pkg(*args):
    return subprocess.check_output(['pkg-config'] + list(args) + ['jansson']).decode().split()


CFLAGS = ['-std=c++17', '-I' + os.path.join(_here, 'include'), '-Wno-missing-field-initializers'] \
    + _flags('--includes') + _pkg('--cflags')
LDFLAGS = []
LIBS = ['-lstdc++'] + _flags('--embed', '--ldflags') + _pkg('--libs')
GCC_LIST = sorted(os.path.relpath(p, _here) for ext in ('*.cc', '*.c') for p in glob.glob(os.path.join(_here, 'plugin', ext)))
