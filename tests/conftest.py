import os
from pathlib import Path

import pytest

#: ../shared/data beside the checkout: the public datasets in development
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# hmum finds the data folder through $HMUM_DATA (hmum.data.datasets): point it at the
# checkout's neighbour unless the environment names another folder
if "HMUM_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["HMUM_DATA"] = str(SHARED_DATA)

#: the narrow terminal every test runs under: CLI output must not depend on the width
TEST_COLUMNS = "60"


@pytest.fixture(autouse=True, scope="session")
def narrow_terminal():
    """COLUMNS=60 for the whole session (module-scoped fixtures that run the CLI
    included): assertions on CLI output must hold whatever the width, so the tests
    read it through ``tests.cli_output.flat``."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("COLUMNS", TEST_COLUMNS)
        yield


@pytest.fixture
def shared_data() -> Path:
    """The folder of public datasets ($HMUM_DATA, else ../shared/data beside the
    checkout); tests using it skip cleanly when it is absent."""
    root = Path(os.environ.get("HMUM_DATA", SHARED_DATA))
    if not root.is_dir():
        pytest.skip(f"{root} not present (public datasets: set HMUM_DATA or put them in "
                    f"{SHARED_DATA})")
    return root
