"""`pip install ./python`: the package of the checkout's pyproject.toml and setup.py,
which build the crate at the root of the checkout; this runs them from there."""

import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
