"""Evidence: every claim made for weight sharing, measured shared vs unshared, with seeds.

``ws.study.run(name, ...)`` runs one study and writes its JSON (every figure), PNG plots
and a short markdown report with a verdict per claim; ``weightshare study NAME`` is the
same from the command line. ``names()`` lists the studies. See docs/evidence.md.
"""

from .context import Claim, Context, Result, Table
from .registry import Study, get, names, register
from .runner import run
from .stats import Comparison, Stats, Verdict, compare, summarize, verdict

__all__ = ["Claim", "Comparison", "Context", "Result", "Stats", "Study", "Table", "Verdict",
           "compare", "get", "names", "register", "run", "summarize", "verdict"]
