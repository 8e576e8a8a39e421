"""The sanitized smoke reuses the integration tests' uWSGI fixture (tests/integration/conftest.py),
loaded under its own module name so the two conftest modules never clash. COWGUARD_PLUGIN points
at the ASan + UBSan build of the plugin (make test-sanitize sets it)."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "cowguard_integration_conftest", Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(integration)

uwsgi = integration.uwsgi  # the fixture
APPS = integration.APPS  # for the integration test modules the sanitized tests load (test_threads)
