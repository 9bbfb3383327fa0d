"""WHP+: Who's Harry Potter with RWHP's teacher construction, one substitute name per subject.

Where each choice comes from:

* That WHP+ exists: the RWHP paper (Liu et al. 2024, arXiv 2407.16997) lists WHP+ among its
  baselines beside WHP, and UnStar compares with the same set (reference/unstar_and_wpu_protocol.md
  §2, §3.4). Its definition could NOT be sourced: it is not in RWHP's released code
  (UCSB-NLP-Chang/causal_unlearn at cba1710 knows ``whp`` and ``intervention`` only), and the
  paper's baseline section was not readable here (reference §3.4: "WHP+ is not in the code:
  definition UNVERIFIED").
* *Our interpretation*, from the description the brief and the paper's abstract give (WHP improved
  with RWHP's better teacher construction; RWHP's framework "includes WHP as a special case"):
  WHP+ is that framework at WHP's setting, N = 1 substitute name per subject and no counterfactual
  prompt (RWHP's ``teacher.py`` with ``N: 1``, ``counter_fact_prompt: false``), with the two
  improvements over RWHP's own ``whp_baseline`` code path that do not need N > 1:
  - change name back (``change_name_back: true``) instead of WHP's anchor-logit penalty of 5:
    the substitute name's probability goes to the subject's name, not merely lowered;
  - the teacher's full distribution (KL), not its argmax (``whp_baseline`` makes it one-hot).
  This is RWHP's own setting on TOFU's QA (``config/forget_tofu.yaml``: no counterfactual
  prompt, change_name_back; README: ``-n 1`` on TOFU), so WHP+ here = RWHP without aggregation
  and without the counterfactual prompt.
* Substitute names: WHP's generic names (conf/method/whp.yaml), one drawn per subject with the job
  seed, as :mod:`baselines.whp`; lr 1e-5, no retain term, as RWHP's scripts/wpu.sh for whp.

The loss, alignment and name change-back are :class:`baselines.rwhp.RWHP`'s.
"""

from __future__ import annotations

from typing import ClassVar

from baselines.rwhp import RWHP, RWHPConfig
from benchmarks.methods import METHODS


@METHODS.register("whp_plus")
class WHPPlus(RWHP):
    config_class = RWHPConfig
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.epochs": "range(1, 10)",
    }
