# Imported by Python itself during Py_Initialize in uWSGI's master (PYTHONPATH points here), like an
# agent's sitecustomize: its threads run while the python plugin loads the apps, cowguard freezes
# and the master forks.
import thread_noise

thread_noise.start("sitecustomize")
