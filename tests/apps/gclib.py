"""Stands for a third-party library that switches the GC back on (seen in the wild)."""
import gc

gc.enable()  # line 4: import-time call


def per_request():
    gc.enable()  # line 8
    gc.unfreeze()  # line 9
