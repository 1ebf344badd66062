"""What a run directory already holds, read compactly so that resuming a long run stays light."""

from __future__ import annotations

from collections.abc import Callable

from ..scoring import SampleScore
from ._records import GenerationRecord, JudgmentRecord
from ._store import RunDir

Scorer = Callable[[JudgmentRecord], SampleScore]


class ResumeState:
    """Per sample: finished (with its score, or None when unscored for good), a generation still to
    judge (the only whole records kept), or nothing usable (generate it)."""

    def __init__(self, run: RunDir, judge_key: str, *, judge_again: Callable[[JudgmentRecord], bool], score: Scorer):
        self.finished: dict[str, SampleScore | None] = {}
        self.to_judge: dict[str, GenerationRecord] = {}
        final: dict[str, SampleScore | None] = {}
        for j in run.judgments():
            if j.judge_key != judge_key:
                continue
            if judge_again(j):
                final.pop(j.sample_id, None)
            else:
                final[j.sample_id] = score(j) if j.status == "scored" else None
        ok: set[str] = set()
        for g in run.generations():
            sid = g.sample_id
            if g.status != "ok":
                ok.discard(sid)
                self.to_judge.pop(sid, None)
                continue
            ok.add(sid)
            if sid in final:
                self.to_judge.pop(sid, None)
            else:
                self.to_judge[sid] = g
        self.finished = {sid: s for sid, s in final.items() if sid in ok}
