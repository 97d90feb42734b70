"""pytest --nbmake notebooks/: execute the course in smoke mode unless DQO_SMOKE is set.

nbmake starts each notebook's kernel with this process's environment, so setting the variable
here, before collection, shrinks every notebook (sizes only, never code paths). Run the full
course with ``DQO_SMOKE=0 pytest --nbmake notebooks/``.
"""

import os

os.environ.setdefault("DQO_SMOKE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
