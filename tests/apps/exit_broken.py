"""An app that cannot load: raises at import (need-app tests)."""
raise RuntimeError("exit_broken: this app fails at import on purpose")
